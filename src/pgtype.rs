//! PostgreSQL column types as driftless converts them: [`PgType`] and the table of built-in
//! type OIDs.
//!
//! Owns the mapping from a type OID to its conversion class, shared by `postgres::catalog`
//! (which resolves user-defined types through the catalog) and `capture::value` (which converts
//! values by class).
//!
//! Invariants:
//! - Pure data: no I/O, no global state.
//! - Every built-in OID (scalar or array) appears once in the table; an array OID resolves to
//!   [`PgType::Array`] of its element with the element's `typdelim`.

/// A column type resolved far enough to convert its values.
///
/// Several PostgreSQL types share one variant: `text`, `varchar`, `bpchar`, `name` and `"char"`
/// are all [`PgType::Text`]; built-in types without a dedicated rule (inet, cidr, macaddr, xml,
/// bit, point, ranges, reg* types, ...) are [`PgType::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `bool`: `t`/`f` → `true`/`false`.
    Bool,
    /// `int2` → JSON number.
    Int2,
    /// `int4` → JSON number.
    Int4,
    /// `int8` → JSON number (i64, exact).
    Int8,
    /// `oid` → JSON number (u32).
    Oid,
    /// `float4` → JSON number, or `"NaN"`/`"Infinity"`/`"-Infinity"`.
    Float4,
    /// `float8` → JSON number, or `"NaN"`/`"Infinity"`/`"-Infinity"`.
    Float8,
    /// `numeric` → JSON string with the exact text.
    Numeric,
    /// `money` → JSON string as given (`$12.34`).
    Money,
    /// `text`, `varchar`, `bpchar`, `name`, `"char"` → JSON string.
    Text,
    /// `json` → the parsed JSON value.
    Json,
    /// `jsonb` → the parsed JSON value.
    Jsonb,
    /// `bytea` → base64 string (standard alphabet, padded).
    Bytea,
    /// `date` → `YYYY-MM-DD` string.
    Date,
    /// `time` → `HH:MM:SS.ffffff` string.
    Time,
    /// `timetz` → `HH:MM:SS.ffffff+HH:MM` string.
    TimeTz,
    /// `timestamp` → `YYYY-MM-DDTHH:MM:SS.ffffff` string.
    Timestamp,
    /// `timestamptz` → `YYYY-MM-DDTHH:MM:SS.ffffffZ` string (UTC).
    TimestampTz,
    /// `interval` → the ISO 8601 text as given (`P1Y2M3DT4H5M6.5S`).
    Interval,
    /// `uuid` → JSON string as given.
    Uuid,
    /// An array type: a JSON array (nested for multi-dimensional arrays) of converted elements.
    Array {
        /// The element type.
        element: Box<PgType>,
        /// The element type's `typdelim`: `,` for all built-in types except `box` (`;`).
        delimiter: u8,
    },
    /// Enums, domains over text, and anything else: the text form as a JSON string.
    Other,
}

/// Built-in types of PostgreSQL 15 with a conversion class of their own, in the order of
/// [`PgType`]: (scalar OID, array OID, class).
static CLASSIFIED: &[(u32, u32, PgType)] = &[
    (16, 1000, PgType::Bool),
    (21, 1005, PgType::Int2),
    (23, 1007, PgType::Int4),
    (20, 1016, PgType::Int8),
    (26, 1028, PgType::Oid),
    (700, 1021, PgType::Float4),
    (701, 1022, PgType::Float8),
    (1700, 1231, PgType::Numeric),
    (790, 791, PgType::Money),
    (18, 1002, PgType::Text), // "char"
    (19, 1003, PgType::Text), // name
    (25, 1009, PgType::Text),
    (1042, 1014, PgType::Text), // bpchar
    (1043, 1015, PgType::Text), // varchar
    (114, 199, PgType::Json),
    (3802, 3807, PgType::Jsonb),
    (17, 1001, PgType::Bytea),
    (1082, 1182, PgType::Date),
    (1083, 1183, PgType::Time),
    (1266, 1270, PgType::TimeTz),
    (1114, 1115, PgType::Timestamp),
    (1184, 1185, PgType::TimestampTz),
    (1186, 1187, PgType::Interval),
    (2950, 2951, PgType::Uuid),
];

/// The other built-in types of PostgreSQL 15 (`pg_catalog` base, range and multirange types
/// that have an array type), all [`PgType::Other`]: (scalar OID, array OID).
static OTHERS: &[(u32, u32)] = &[
    (22, 1006),   // int2vector
    (24, 1008),   // regproc
    (27, 1010),   // tid
    (28, 1011),   // xid
    (29, 1012),   // cid
    (30, 1013),   // oidvector
    (142, 143),   // xml
    (600, 1017),  // point
    (601, 1018),  // lseg
    (602, 1019),  // path
    (603, 1020),  // box
    (604, 1027),  // polygon
    (628, 629),   // line
    (650, 651),   // cidr
    (718, 719),   // circle
    (774, 775),   // macaddr8
    (829, 1040),  // macaddr
    (869, 1041),  // inet
    (1033, 1034), // aclitem
    (1560, 1561), // bit
    (1562, 1563), // varbit
    (1790, 2201), // refcursor
    (2202, 2207), // regprocedure
    (2203, 2208), // regoper
    (2204, 2209), // regoperator
    (2205, 2210), // regclass
    (2206, 2211), // regtype
    (2249, 2287), // record
    (2970, 2949), // txid_snapshot
    (3220, 3221), // pg_lsn
    (3614, 3643), // tsvector
    (3615, 3645), // tsquery
    (3642, 3644), // gtsvector
    (3734, 3735), // regconfig
    (3769, 3770), // regdictionary
    (3904, 3905), // int4range
    (3906, 3907), // numrange
    (3908, 3909), // tsrange
    (3910, 3911), // tstzrange
    (3912, 3913), // daterange
    (3926, 3927), // int8range
    (4072, 4073), // jsonpath
    (4089, 4090), // regnamespace
    (4096, 4097), // regrole
    (4191, 4192), // regcollation
    (4451, 6150), // int4multirange
    (4532, 6151), // nummultirange
    (4533, 6152), // tsmultirange
    (4534, 6153), // tstzmultirange
    (4535, 6155), // datemultirange
    (4536, 6157), // int8multirange
    (5038, 5039), // pg_snapshot
    (5069, 271),  // xid8
];

/// `box`: the only built-in type whose `typdelim` is `;` rather than `,`. Both tables were
/// checked against `pg_type` of PostgreSQL 15.18.
const BOX_OID: u32 = 603;

impl PgType {
    /// Resolves a built-in type OID (a `pg_catalog` base, range or multirange type, or its array
    /// type) to its conversion class. Returns `None` for any other OID (user-defined enums,
    /// domains, composites, extension types...): the caller resolves those (usually to
    /// [`PgType::Other`], or via a domain's base type).
    pub fn from_builtin_oid(oid: u32) -> Option<PgType> {
        let classified = CLASSIFIED
            .iter()
            .map(|(scalar, array, ty)| (*scalar, *array, ty));
        let others = OTHERS
            .iter()
            .map(|(scalar, array)| (*scalar, *array, &PgType::Other));
        classified.chain(others).find_map(|(scalar, array, ty)| {
            if scalar == oid {
                Some(ty.clone())
            } else if array == oid {
                let delimiter = if scalar == BOX_OID { b';' } else { b',' };
                Some(PgType::Array {
                    element: Box::new(ty.clone()),
                    delimiter,
                })
            } else {
                None
            }
        })
    }

    /// Short name of the conversion class for event metadata, in `pg_type.typname` style: the
    /// canonical type's name (`"bool"`, `"int4"`, `"text"`, `"timestamptz"`, ...), `"other"` for
    /// [`PgType::Other`], and `"_"` + the element's name for arrays (`"_int4"`, `"_other"`).
    /// Types sharing a class share its name: `varchar`, `bpchar`, `name` and `"char"` give
    /// `"text"`.
    #[cfg(test)]
    pub(crate) fn name(&self) -> String {
        match self {
            PgType::Array { element, .. } => {
                let mut name = String::from("_");
                name.push_str(&element.name());
                name
            }
            scalar => scalar.scalar_name().to_owned(),
        }
    }

    #[cfg(test)]
    fn scalar_name(&self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Oid => "oid",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Numeric => "numeric",
            PgType::Money => "money",
            PgType::Text => "text",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Bytea => "bytea",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::TimeTz => "timetz",
            PgType::Timestamp => "timestamp",
            PgType::TimestampTz => "timestamptz",
            PgType::Interval => "interval",
            PgType::Uuid => "uuid",
            PgType::Array { .. } => "array",
            PgType::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(element: PgType) -> PgType {
        PgType::Array {
            element: Box::new(element),
            delimiter: b',',
        }
    }

    #[test]
    fn builtin_oids_scalars_and_arrays() {
        use PgType::*;
        let cases: &[(u32, u32, PgType)] = &[
            (16, 1000, Bool),
            (21, 1005, Int2),
            (23, 1007, Int4),
            (20, 1016, Int8),
            (26, 1028, Oid),
            (700, 1021, Float4),
            (701, 1022, Float8),
            (1700, 1231, Numeric),
            (790, 791, Money),
            (25, 1009, Text),
            (1043, 1015, Text),
            (1042, 1014, Text),
            (19, 1003, Text),
            (18, 1002, Text),
            (114, 199, Json),
            (3802, 3807, Jsonb),
            (17, 1001, Bytea),
            (1082, 1182, Date),
            (1083, 1183, Time),
            (1266, 1270, TimeTz),
            (1114, 1115, Timestamp),
            (1184, 1185, TimestampTz),
            (1186, 1187, Interval),
            (2950, 2951, Uuid),
            (869, 1041, Other),
            (650, 651, Other),
            (829, 1040, Other),
            (774, 775, Other),
            (142, 143, Other),
            (1560, 1561, Other),
            (1562, 1563, Other),
            (600, 1017, Other),
            (3904, 3905, Other),
            (3220, 3221, Other),
            (5069, 271, Other),
        ];
        for (oid, array_oid, ty) in cases {
            assert_eq!(
                PgType::from_builtin_oid(*oid),
                Some(ty.clone()),
                "oid {oid}"
            );
            assert_eq!(
                PgType::from_builtin_oid(*array_oid),
                Some(arr(ty.clone())),
                "oid {array_oid}"
            );
        }
        assert_eq!(PgType::from_builtin_oid(603), Some(Other));
        assert_eq!(
            PgType::from_builtin_oid(1020),
            Some(Array {
                element: Box::new(Other),
                delimiter: b';'
            })
        );
        for unknown in [0, 1, 2276, 16384, 99999, u32::MAX] {
            assert_eq!(PgType::from_builtin_oid(unknown), None, "oid {unknown}");
        }
    }

    #[test]
    fn builtin_table_has_unique_oids() {
        let classified = CLASSIFIED.iter().flat_map(|(s, a, _)| [*s, *a]);
        let mut oids: Vec<u32> = OTHERS
            .iter()
            .flat_map(|(s, a)| [*s, *a])
            .chain(classified)
            .collect();
        let n = oids.len();
        oids.sort_unstable();
        oids.dedup();
        assert_eq!(oids.len(), n);
    }

    #[test]
    fn names() {
        assert_eq!(PgType::Int4.name(), "int4");
        assert_eq!(PgType::TimestampTz.name(), "timestamptz");
        assert_eq!(PgType::Other.name(), "other");
        assert_eq!(PgType::from_builtin_oid(1043).unwrap().name(), "text");
        assert_eq!(PgType::from_builtin_oid(1007).unwrap().name(), "_int4");
        assert_eq!(PgType::from_builtin_oid(1020).unwrap().name(), "_other");
        assert_eq!(arr(arr(PgType::Bool)).name(), "__bool");
    }
}
