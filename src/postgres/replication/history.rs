//! Pure parsing of a timeline history file, as `TIMELINE_HISTORY` returns it.
//!
//! Each line of the file is `parentTLI<TAB>switchpoint<TAB>reason`: the timeline `parentTLI`
//! ended at `switchpoint`, where the next timeline forked from it. Blank lines and lines
//! starting with `#` are comments (as PostgreSQL reads the file). Invariant: a line that is
//! neither a comment nor well formed is an error, never skipped.

use crate::lsn::Lsn;

/// Where timeline `tli` ended, according to the history file `content` of a later timeline;
/// `Ok(None)` when the file does not name `tli` (it is not an ancestor of that timeline).
pub(crate) fn switch_point(content: &str, tli: u32) -> Result<Option<Lsn>, String> {
    for (number, line) in content.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let parent = fields.next().and_then(|f| f.trim().parse::<u32>().ok());
        let lsn = fields.next().and_then(|f| f.trim().parse::<Lsn>().ok());
        match (parent, lsn) {
            (Some(parent), Some(lsn)) if parent == tli => return Ok(Some(lsn)),
            (Some(_), Some(_)) => {}
            _ => {
                return Err(format!(
                    "line {} of the timeline history is not `parentTLI<TAB>switchpoint`",
                    number + 1
                ));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORY: &str = "# a comment\n\
        1\t0/3000158\tno recovery target specified\n\
        \n\
        2\t0/5000A28\tbefore 2000-01-01 00:00:00+00\n\
        3\t1/0\tno recovery target specified\n";

    #[test]
    fn finds_where_each_ancestor_ended() {
        assert_eq!(switch_point(HISTORY, 1), Ok(Some(Lsn(0x300_0158))));
        assert_eq!(switch_point(HISTORY, 2), Ok(Some(Lsn(0x500_0A28))));
        assert_eq!(switch_point(HISTORY, 3), Ok(Some(Lsn(1 << 32))));
    }

    #[test]
    fn a_timeline_not_in_the_history_is_none() {
        assert_eq!(switch_point(HISTORY, 4), Ok(None));
        assert_eq!(switch_point("", 1), Ok(None));
        assert_eq!(switch_point("# only comments\n\n", 1), Ok(None));
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        assert!(switch_point("1 0/3000158 no tab\n", 1).is_err());
        assert!(switch_point("x\t0/1\tr\n", 1).is_err());
        assert!(switch_point("1\tnot-an-lsn\tr\n", 1).is_err());
        // Even before the line that would have matched.
        assert!(switch_point("junk\n1\t0/1\tr\n", 1).is_err());
    }
}
