//! The work list of a destination that refuses requests as a whole: items go out in groups
//! of at most `max`, and a group the destination refuses is split in halves until the items
//! it refuses stand alone (and can be rejected one by one). Pure.
//!
//! Invariants: groups come out in input order (the halves of a split group come next, first
//! half first); no item is lost or repeated unless the caller sends a group again.

/// Groups still to send.
#[derive(Debug)]
pub(crate) struct Bisection<T> {
    /// A stack: the next group is last.
    work: Vec<Vec<T>>,
}

impl<T: Clone> Bisection<T> {
    /// `items` in groups of at most `max` (at least one).
    pub(crate) fn new(items: &[T], max: usize) -> Self {
        Bisection {
            work: items.chunks(max.max(1)).rev().map(<[_]>::to_vec).collect(),
        }
    }

    /// The next group to send.
    pub(crate) fn next_group(&mut self) -> Option<Vec<T>> {
        self.work.pop()
    }

    /// Sends `group` next.
    pub(crate) fn send_next(&mut self, group: Vec<T>) {
        self.work.push(group);
    }

    /// Sends the halves of a refused `group` next, first half first.
    pub(crate) fn split(&mut self, mut group: Vec<T>) {
        let second = group.split_off(group.len() / 2);
        self.work.push(second);
        self.work.push(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_input_order_and_halves_come_next() {
        let mut b = Bisection::new(&[1, 2, 3, 4, 5], 4);
        let first = b.next_group().unwrap();
        assert_eq!(first, [1, 2, 3, 4]);
        b.split(first);
        assert_eq!(b.next_group().unwrap(), [1, 2]);
        let second = b.next_group().unwrap();
        assert_eq!(second, [3, 4]);
        b.send_next(vec![4]);
        assert_eq!(b.next_group().unwrap(), [4]);
        assert_eq!(b.next_group().unwrap(), [5]);
        assert!(b.next_group().is_none());
        assert!(Bisection::<u8>::new(&[], 0).next_group().is_none());
    }
}
