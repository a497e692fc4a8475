-- Demo data for docker/compose.yaml. The postgres image runs this once, when its data volume is
-- first initialised, in the database POSTGRES_DB.
CREATE TABLE public.contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    first_name  text,
    last_name   text,
    score       integer NOT NULL DEFAULT 0,
    balance     numeric(20, 2),
    tags        text[],
    attributes  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO public.contacts (email, first_name, last_name, score, balance, tags, attributes)
SELECT format('contact%s@example.com', n),
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara'])[1 + n % 5],
       (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov'])[1 + n % 5],
       n % 100,
       round((n * 12.34)::numeric, 2),
       CASE WHEN n % 3 = 0 THEN ARRAY['vip'] ELSE ARRAY[]::text[] END,
       jsonb_build_object('source', CASE WHEN n % 2 = 0 THEN 'web' ELSE 'import' END, 'visits', n % 7)
FROM generate_series(1, 100) AS n;

-- To see changes stream, e.g.:
--   docker compose -f docker/compose.yaml exec postgres psql -U postgres -d app \
--     -c "UPDATE contacts SET score = score + 1 WHERE id = 1"
