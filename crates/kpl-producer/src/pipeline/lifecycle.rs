//! Where the pipeline is in its life ([`Lifecycle`]), and whether its stages owe a
//! move before it can say what is due ([`Stages`]).

use std::time::Instant;

/// Where the pipeline is in its life.
///
/// Rules: a flush lasts until nothing is buffered, then the pipeline runs as
/// before; a stop or a shutdown lasts for good (a flush asked for then changes
/// nothing; a stop does not undo a shutdown); while flushing or stopping, what is
/// buffered goes without waiting for its deadline; once shut down, nothing is
/// held at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Records wait for their deadlines (or for enough company).
    #[default]
    Running,
    /// Everything buffered goes without waiting for deadlines, until nothing is
    /// buffered (records whose shard is not known yet still wait for the map,
    /// bounded by their deadline).
    Flushing,
    /// Nothing more comes in: everything held goes at once, and the driver ends
    /// once the pipeline is idle.
    Stopping,
    /// Shut down: whatever is held, or comes back from a request still in flight
    /// (to be retried, verified or placed on a shard), fails as shut down at once.
    ShutDown,
}

impl Lifecycle {
    /// A flush is asked for.
    pub(super) fn flush(&mut self) {
        if *self == Self::Running {
            *self = Self::Flushing;
        }
    }

    /// Nothing more comes in.
    pub(super) fn stop(&mut self) {
        if *self != Self::ShutDown {
            *self = Self::Stopping;
        }
    }

    /// Shut down: nothing is held any more.
    pub(super) fn shut_down(&mut self) {
        *self = Self::ShutDown;
    }

    /// Whether the pipeline is shut down (nothing may wait in it).
    #[inline]
    pub(super) fn is_shut_down(self) -> bool {
        self == Self::ShutDown
    }

    /// Nothing is buffered any more: a flush is over.
    pub(super) fn flushed(&mut self) {
        if *self == Self::Flushing {
            *self = Self::Running;
        }
    }

    /// Whether what is buffered goes without waiting for its deadline.
    #[inline]
    pub(super) fn sends_at_once(self) -> bool {
        self != Self::Running
    }
}

/// Whether the stages must be moved on before the pipeline can tell what is due.
///
/// Rules: anything that comes in (records, answers, commands) makes a move owed;
/// a move done at an instant holds for that instant only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Stages {
    /// Something came in since the stages were last moved on (or they never were).
    #[default]
    Owed,
    /// Moved on at this instant, and nothing came in since.
    MovedAt(Instant),
}

impl Stages {
    /// Something came in.
    #[inline]
    pub(super) fn owe(&mut self) {
        *self = Self::Owed;
    }

    /// The stages were moved on at `now`.
    pub(super) fn moved(&mut self, now: Instant) {
        *self = Self::MovedAt(now);
    }

    /// Whether something came in since the last move.
    pub(super) fn owed(self) -> bool {
        self == Self::Owed
    }

    /// Whether the stages were moved on at `now` already, with nothing since.
    pub(super) fn moved_at(self, now: Instant) -> bool {
        self == Self::MovedAt(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kpl_runtime::{Timer, VirtualClock};

    use super::*;

    #[test]
    fn a_flush_ends_when_nothing_is_buffered_and_a_stop_never_does() {
        let mut l = Lifecycle::default();
        assert!(!l.sends_at_once());
        l.flushed();
        assert_eq!(l, Lifecycle::Running, "no flush to end");
        l.flush();
        assert_eq!(l, Lifecycle::Flushing);
        assert!(l.sends_at_once());
        l.flushed();
        assert_eq!(l, Lifecycle::Running);
        l.flush();
        l.stop();
        assert_eq!(l, Lifecycle::Stopping);
        l.flush();
        l.flushed();
        assert_eq!(l, Lifecycle::Stopping, "a stop lasts");
        assert!(l.sends_at_once());
        assert!(!l.is_shut_down());
        l.shut_down();
        l.stop();
        l.flush();
        l.flushed();
        assert!(l.is_shut_down(), "a shutdown lasts");
        assert!(l.sends_at_once());
    }

    #[test]
    fn a_move_holds_for_its_instant_until_something_comes_in() {
        let t0 = VirtualClock::new().now();
        let mut s = Stages::default();
        assert!(s.owed(), "never moved");
        assert!(!s.moved_at(t0));
        s.moved(t0);
        assert!(!s.owed());
        assert!(s.moved_at(t0));
        assert!(!s.moved_at(t0 + Duration::from_millis(1)));
        s.owe();
        assert!(s.owed());
        assert!(!s.moved_at(t0));
    }
}
