//! COQL of the Zoho emulator (`POST /crm/v8/coql`): a lexer, a parser and an evaluator.
//!
//! Owns the supported subset: `select f, .. from Module [where <expr>] [order by f [asc|desc],
//! ..] [limit n [offset m] | limit m, n]` with `and` / `or` / parentheses, `= != <> < <= > >=`,
//! `like`, `in`, `not in` and `is [not] null`. Limits as Zoho's: LIMIT ≤ 2000, OFFSET + LIMIT ≤
//! 100 000, at most 25 criteria, at most `coqlMaxInValues` (50) values per `in` (else a 400
//! `LIMIT_EXCEEDED`); a parse error is a 400 `SYNTAX_ERROR`, and so are, by the knobs, more than
//! two criteria at one level of parentheses (`coqlPairGrouping`) and a reserved word used as a
//! field name unquoted (`coqlReservedWords`; `'External'` and `"External"` name the field); the
//! answer carries `info{count, more_records}`. Soft-deleted records never match.

use std::cmp::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use chrono::DateTime;
use serde_json::{Value, json};

use super::Options;
use super::records::{project, record_json};
use super::response::{Resp, err};
use super::schema::schema;
use super::state::{App, Inner};
use super::write::parse_body;

/// One lexical token of a query.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    Id(String),
    Str(String),
    /// A double-quoted name.
    Quoted(String),
    Num(String),
    Op(String),
    Comma,
    LeftParen,
    RightParen,
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == ',' {
            out.push(Token::Comma);
            i += 1;
        } else if ch == '(' {
            out.push(Token::LeftParen);
            i += 1;
        } else if ch == ')' {
            out.push(Token::RightParen);
            i += 1;
        } else if ch == '\'' || ch == '"' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(q) if *q == ch && c.get(i + 1) == Some(&ch) => {
                        v.push(ch);
                        i += 2;
                    }
                    Some(q) if *q == ch => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        v.push(*x);
                        i += 1;
                    }
                }
            }
            out.push(if ch == '"' {
                Token::Quoted(v)
            } else {
                Token::Str(v)
            });
        } else if "<>=!".contains(ch) {
            let mut op = ch.to_string();
            if let Some(n) = c.get(i + 1).filter(|n| "<>=".contains(**n)) {
                op.push(*n);
            }
            i += op.len();
            if !["=", "!=", "<>", "<", "<=", ">", ">="].contains(&op.as_str()) {
                return Err(format!("invalid operator {op}"));
            }
            out.push(Token::Op(op));
        } else if ch.is_ascii_digit() || ch == '-' {
            let st = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            out.push(Token::Num(c[st..i].iter().collect()));
        } else if ch.is_alphanumeric() || ch == '_' || ch == '$' {
            let st = i;
            while i < c.len() && (c[i].is_alphanumeric() || "_$.".contains(c[i])) {
                i += 1;
            }
            out.push(Token::Id(c[st..i].iter().collect()));
        } else {
            return Err(format!("unexpected character {ch}"));
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(String, String, Value),
    In(String, Vec<Value>, bool),
    Null(String, bool),
    Like(String, String, bool),
}

#[derive(Debug)]
struct Query {
    fields: Vec<String>,
    module: String,
    cond: Option<Expr>,
    order: Vec<(String, bool)>,
    limit: usize,
    offset: usize,
    criteria: usize,
    /// The most values of one `in` / `not in`.
    in_values: usize,
}

/// How strictly a query is read (the COQL knobs).
#[derive(Clone, Copy, Default)]
struct Rules {
    pair_grouping: bool,
    reserved_words: bool,
}

/// Words that cannot name a field unquoted: SQL's reserved words and COQL's keywords.
const RESERVED: &[&str] = &[
    "add",
    "all",
    "alter",
    "and",
    "any",
    "as",
    "asc",
    "between",
    "by",
    "case",
    "cast",
    "check",
    "column",
    "constraint",
    "create",
    "cross",
    "current",
    "default",
    "delete",
    "desc",
    "distinct",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "external",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "in",
    "inner",
    "insert",
    "intersect",
    "into",
    "is",
    "join",
    "left",
    "like",
    "limit",
    "natural",
    "not",
    "null",
    "of",
    "offset",
    "on",
    "or",
    "order",
    "outer",
    "primary",
    "references",
    "right",
    "select",
    "set",
    "some",
    "table",
    "then",
    "to",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "when",
    "where",
    "with",
];

/// A recursive-descent parser over the tokens of one query.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
    criteria: usize,
    in_values: usize,
    rules: Rules,
}

impl Parser {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Id(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn kw(&mut self, kw: &str) -> Result<(), String> {
        if self.peek_kw(kw) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {kw}"))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some(Token::Id(s)) => {
                self.at += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected identifier, got {other:?}")),
        }
    }
    /// A field name: a name, or a quoted one (`'External'`, `"External"`); a reserved word only
    /// quoted.
    fn field(&mut self) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some(Token::Str(s) | Token::Quoted(s)) => {
                self.at += 1;
                Ok(s.clone())
            }
            Some(Token::Id(s))
                if self.rules.reserved_words
                    && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) =>
            {
                Err(format!(
                    "reserved word {s} used as a field name without quotes"
                ))
            }
            _ => self.ident(),
        }
    }
    fn eat(&mut self, t: &Token) -> bool {
        if self.tokens.get(self.at) == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn lit(&mut self) -> Result<Value, String> {
        let v = match self.tokens.get(self.at) {
            Some(Token::Str(s)) => json!(s),
            Some(Token::Num(n)) => json!(n),
            Some(Token::Id(s)) if s.eq_ignore_ascii_case("null") => Value::Null,
            Some(Token::Id(s)) if s.eq_ignore_ascii_case("true") => json!(true),
            Some(Token::Id(s)) if s.eq_ignore_ascii_case("false") => json!(false),
            other => return Err(format!("expected value, got {other:?}")),
        };
        self.at += 1;
        Ok(v)
    }
    fn num(&mut self) -> Result<usize, String> {
        match self.tokens.get(self.at) {
            Some(Token::Num(n)) => {
                self.at += 1;
                n.parse().map_err(|_| format!("invalid number {n}"))
            }
            _ => Err("expected number".into()),
        }
    }
    /// Conditions joined by `and` / `or` at one level of parentheses (`and` binds tighter);
    /// with pair grouping, at most two.
    fn expr(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.atom()?];
        let mut ors = vec![];
        while self.peek_kw("and") || self.peek_kw("or") {
            ors.push(self.peek_kw("or"));
            self.at += 1;
            terms.push(self.atom()?);
        }
        if self.rules.pair_grouping && terms.len() > 2 {
            return Err(format!(
                "{} criteria without parentheses: group them in pairs, ((a and b) and c)",
                terms.len()
            ));
        }
        let mut terms = terms.into_iter();
        let mut any = vec![terms.next().ok_or("expected a condition")?];
        for (or, term) in ors.into_iter().zip(terms) {
            if or {
                any.push(term);
            } else {
                let last = any.pop().ok_or("expected a condition")?;
                any.push(Expr::And(Box::new(last), Box::new(term)));
            }
        }
        let mut any = any.into_iter();
        let first = any.next().ok_or("expected a condition")?;
        Ok(any.fold(first, |l, r| Expr::Or(Box::new(l), Box::new(r))))
    }
    fn atom(&mut self) -> Result<Expr, String> {
        if self.eat(&Token::LeftParen) {
            let e = self.expr()?;
            if !self.eat(&Token::RightParen) {
                return Err("expected )".into());
            }
            return Ok(e);
        }
        let f = self.field()?;
        self.criteria += 1;
        let neg = self.peek_kw("not");
        if neg {
            self.at += 1;
        }
        if self.peek_kw("is") {
            self.at += 1;
            let n = self.peek_kw("not");
            if n {
                self.at += 1;
            }
            self.kw("null")?;
            return Ok(Expr::Null(f, n));
        }
        if self.peek_kw("in") {
            self.at += 1;
            if !self.eat(&Token::LeftParen) {
                return Err("expected (".into());
            }
            let mut vs = vec![self.lit()?];
            while self.eat(&Token::Comma) {
                vs.push(self.lit()?);
            }
            if !self.eat(&Token::RightParen) {
                return Err("expected )".into());
            }
            self.in_values = self.in_values.max(vs.len());
            return Ok(Expr::In(f, vs, neg));
        }
        if self.peek_kw("like") {
            self.at += 1;
            return match self.lit()? {
                Value::String(s) => Ok(Expr::Like(f, s, neg)),
                _ => Err("like needs a string".into()),
            };
        }
        if neg {
            return Err("unexpected not".into());
        }
        let op = match self.tokens.get(self.at) {
            Some(Token::Op(o)) => o.clone(),
            other => return Err(format!("expected operator, got {other:?}")),
        };
        self.at += 1;
        Ok(Expr::Cmp(f, op, self.lit()?))
    }
}

fn parse_coql(s: &str, rules: Rules) -> Result<Query, String> {
    let mut p = Parser {
        tokens: lex(s)?,
        at: 0,
        criteria: 0,
        in_values: 0,
        rules,
    };
    p.kw("select")?;
    let mut fields = vec![p.field()?];
    while p.eat(&Token::Comma) {
        fields.push(p.field()?);
    }
    p.kw("from")?;
    let module = p.ident()?;
    let cond = if p.peek_kw("where") {
        p.at += 1;
        Some(p.expr()?)
    } else {
        None
    };
    let mut order = vec![];
    if p.peek_kw("order") {
        p.at += 1;
        p.kw("by")?;
        loop {
            let f = p.field()?;
            let asc = if p.peek_kw("desc") {
                p.at += 1;
                false
            } else {
                if p.peek_kw("asc") {
                    p.at += 1;
                }
                true
            };
            order.push((f, asc));
            if !p.eat(&Token::Comma) {
                break;
            }
        }
    }
    let (mut limit, mut offset) = (200, 0);
    if p.peek_kw("limit") {
        p.at += 1;
        let a = p.num()?;
        if p.eat(&Token::Comma) {
            offset = a;
            limit = p.num()?;
        } else {
            limit = a;
            if p.peek_kw("offset") {
                p.at += 1;
                offset = p.num()?;
            }
        }
    }
    if p.at != p.tokens.len() {
        return Err(format!("unexpected token {:?}", p.tokens[p.at]));
    }
    Ok(Query {
        fields,
        module,
        cond,
        order,
        limit,
        offset,
        criteria: p.criteria,
        in_values: p.in_values,
    })
}

/// The query of a COQL request body, read leniently (for the credit cost and the scopes).
fn lenient(body: &[u8]) -> Option<Query> {
    let b = serde_json::from_slice::<Value>(body).ok()?;
    parse_coql(b.get("select_query")?.as_str()?, Rules::default()).ok()
}

/// The module a COQL request body reads, if it parses.
pub(super) fn module(body: &[u8]) -> Option<String> {
    lenient(body).map(|q| q.module)
}

/// The credits a COQL call costs by its LIMIT: 1 up to 200, 2 up to 1000, else 3.
pub(super) fn cost(body: &[u8]) -> u64 {
    let limit = lenient(body).map_or(200, |q| q.limit);
    match limit {
        0..=200 => 1,
        201..=1000 => 2,
        _ => 3,
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("id").and_then(as_text),
        _ => None,
    }
}

fn cmp_vals(a: &Value, b: &Value) -> Option<Ordering> {
    let (x, y) = (as_text(a)?, as_text(b)?);
    if let (Ok(p), Ok(q)) = (x.parse::<i128>(), y.parse::<i128>()) {
        return Some(p.cmp(&q));
    }
    if let (Ok(p), Ok(q)) = (
        DateTime::parse_from_rfc3339(&x),
        DateTime::parse_from_rfc3339(&y),
    ) {
        return Some(p.cmp(&q));
    }
    if let (Ok(p), Ok(q)) = (x.parse::<f64>(), y.parse::<f64>()) {
        return p.partial_cmp(&q);
    }
    Some(x.to_lowercase().cmp(&y.to_lowercase()))
}

fn like(s: &str, pat: &str) -> bool {
    let (s, pat) = (s.to_lowercase(), pat.to_lowercase());
    match (pat.strip_prefix('%'), pat.strip_suffix('%')) {
        (Some(_), Some(_)) if pat.len() >= 2 => s.contains(&pat[1..pat.len() - 1]),
        (Some(rest), None) => s.ends_with(rest),
        (None, Some(rest)) => s.starts_with(rest),
        _ => s == pat,
    }
}

fn eval(e: &Expr, r: &Value) -> bool {
    let get = |f: &str| r.get(f).cloned().unwrap_or(Value::Null);
    match e {
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
        Expr::Null(f, not) => get(f).is_null() != *not,
        Expr::In(f, vs, not) => {
            let v = get(f);
            !v.is_null() && vs.iter().any(|x| cmp_vals(&v, x) == Some(Ordering::Equal)) != *not
        }
        Expr::Like(f, p, not) => as_text(&get(f)).is_some_and(|s| like(&s, p) != *not),
        Expr::Cmp(f, op, lit) => {
            let Some(o) = cmp_vals(&get(f), lit) else {
                return false;
            };
            match op.as_str() {
                "=" => o == Ordering::Equal,
                "!=" | "<>" => o != Ordering::Equal,
                "<" => o == Ordering::Less,
                "<=" => o != Ordering::Greater,
                ">" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }
        }
    }
}

/// `POST /crm/v8/coql`.
pub(super) async fn query(State(app): State<App>, body: Bytes) -> Resp {
    match parse_body(&body) {
        Ok(b) => run(&app.lock(), &app.opts, &b),
        Err(refusal) => refusal,
    }
}

fn run(st: &Inner, o: &Options, b: &Value) -> Resp {
    let Some(q) = b.get("select_query").and_then(Value::as_str) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "select_query"}),
        );
    };
    let rules = Rules {
        pair_grouping: st.knobs.coql_pair_grouping,
        reserved_words: st.knobs.coql_reserved_words,
    };
    let q = match parse_coql(q, rules) {
        Ok(q) => q,
        Err(e) => {
            return err(
                400,
                "SYNTAX_ERROR",
                &format!("error in select query: {e}"),
                json!({}),
            );
        }
    };
    let Some(fields) = schema(&q.module) else {
        return err(
            400,
            "INVALID_QUERY",
            "invalid module given",
            json!({"module": q.module}),
        );
    };
    for f in q.fields.iter().chain(q.order.iter().map(|(f, _)| f)) {
        if !fields.iter().any(|d| d.api == f) {
            return err(
                400,
                "INVALID_QUERY",
                "invalid column given",
                json!({"column_name": f}),
            );
        }
    }
    if q.in_values > st.knobs.coql_max_in_values {
        return err(
            400,
            "LIMIT_EXCEEDED",
            "too many values for the in operator",
            json!({"maximum": st.knobs.coql_max_in_values, "given": q.in_values}),
        );
    }
    if q.limit > 2000 || q.offset + q.limit > 100_000 || q.criteria > 25 || q.fields.len() > 50 {
        return err(
            400,
            "LIMIT_EXCEEDED",
            "limit exceeded",
            json!({"limit": q.limit, "offset": q.offset}),
        );
    }
    let mut rows: Vec<Value> = st
        .records
        .iter()
        .filter(|r| r.module == q.module && r.deleted.is_none())
        .map(|r| record_json(r, o))
        .filter(|r| q.cond.as_ref().is_none_or(|c| eval(c, r)))
        .collect();
    rows.sort_by(|a, b| {
        for (f, asc) in q
            .order
            .iter()
            .map(|(f, a)| (f.as_str(), *a))
            .chain([("id", true)])
        {
            let o = cmp_vals(&a[f], &b[f]).unwrap_or(Ordering::Equal);
            let o = if asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let total = rows.len();
    let wanted: Vec<&str> = q.fields.iter().map(String::as_str).collect();
    let data: Vec<Value> = rows
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|r| project(r, &wanted))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"count": data.len(), "more_records": total > q.offset + q.limit}}),
    )
}
