//! The outage of a fault, from a client probe's answers: the one computation of the lab
//! e2e suite (`tests/lab_e2e.rs`) and the failover benchmark (`benches/failover_lab.rs`),
//! whatever their probe. Pure: answers in, the longest gap out; it never reads a clock.
//!
//! The e2e suite's budgets are on the gap itself; the benchmark prints it less one probe
//! interval (`Gap::less`), so that 0 means no probe was lost.
//!
//! The Vagrant rig, which runs without cargo, has the one copy of this rule in
//! `vagrant/e2e-figures.py`, with these tests' cases in its self-test: change both.
#![allow(dead_code)]

use std::time::Duration;

/// The longest time without an answer around a fault, and who answered at its two ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap<W> {
    /// When it began: the answer before it, or the window's start when there is none.
    pub start: Duration,
    pub length: Duration,
    /// Who answered last before the gap; None if nothing answered before the window.
    pub before: Option<W>,
    /// Who answered first after it; None if nothing has answered since ("nobody yet").
    pub after: Option<W>,
}

impl<W> Gap<W> {
    /// The gap less one probe interval: the time lost beyond the probes' own spacing.
    pub fn less(&self, interval: Duration) -> Duration {
        self.length.saturating_sub(interval)
    }
}

/// The longest gap between answers over the window [from, to], counted from the last
/// answer strictly before `from` (or from `from` itself when there is none), up to `to`
/// if nothing answered after the last answer. `answers` are (when, who) on one clock, as
/// an offset from any origin; answers after `to` are ignored, their order is not assumed.
/// The first of equally long gaps.
pub fn longest_gap<W: Clone>(answers: &[(Duration, W)], from: Duration, to: Duration) -> Gap<W> {
    let mut longest: Option<Gap<W>> = None;
    for gap in gaps(answers, from, to) {
        if longest.as_ref().is_none_or(|l| gap.length > l.length) {
            longest = Some(gap);
        }
    }
    longest.unwrap_or(Gap {
        start: from,
        length: Duration::ZERO,
        before: None,
        after: None,
    })
}

/// Every gap between answers over the window [from, to], as `longest_gap` counts them,
/// in time order: what a budget is judged on, so that a short real outage is not hidden
/// behind a longer gap of another kind.
pub fn gaps<W: Clone>(answers: &[(Duration, W)], from: Duration, to: Duration) -> Vec<Gap<W>> {
    let mut sorted: Vec<&(Duration, W)> = answers.iter().filter(|a| a.0 <= to).collect();
    sorted.sort_by_key(|a| a.0);
    let (mut previous, mut who) = sorted
        .iter()
        .rev()
        .find(|a| a.0 < from)
        .map_or((from, None), |a| (a.0, Some(a.1.clone())));
    let mut found = Vec::new();
    for (when, next) in sorted.into_iter().filter(|a| a.0 >= from) {
        found.push(Gap {
            start: previous,
            length: *when - previous,
            before: who.clone(),
            after: Some(next.clone()),
        });
        (previous, who) = (*when, Some(next.clone()));
    }
    found.push(Gap {
        start: previous,
        length: to.saturating_sub(previous),
        before: who,
        after: None,
    });
    found
}

/// The longest stretch of [start, end] in which the probe sent nothing: time in which no
/// client asked, so a gap between answers can be the probe's starvation (a machine stall
/// of the test host) rather than the VIP's. `sends` are the probes' send times, any order.
pub fn starved(sends: &[Duration], start: Duration, end: Duration) -> Duration {
    let mut inside: Vec<Duration> = sends
        .iter()
        .copied()
        .filter(|s| *s > start && *s < end)
        .collect();
    inside.sort_unstable();
    let mut points = Vec::with_capacity(inside.len() + 2);
    points.push(start);
    points.extend(inside);
    points.push(end);
    points
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// What a gap says against its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Within,
    /// Over budget, but only because the probe itself was starved inside the gap: with
    /// the starved stretch taken out it is within. The run measured nothing either way.
    Inconclusive,
    /// Over budget even with the probe's own starvation taken out: the VIP's outage.
    Over,
}

/// Judges a gap of `length`, in which the probe, sending every `interval`, sent nothing
/// for `starved`, against `budget`. Only the starved stretch beyond the probes' own
/// spacing is taken out, and that is generous only to the instrument: the caller reruns
/// an inconclusive fault rather than passing it.
pub fn judge(length: Duration, starved: Duration, interval: Duration, budget: Duration) -> Verdict {
    if length <= budget {
        Verdict::Within
    } else if length.saturating_sub(starved.saturating_sub(interval)) <= budget {
        Verdict::Inconclusive
    } else {
        Verdict::Over
    }
}

/// Judges every gap of a window against `budget`, each with the probe's own starvation
/// inside it (`sends`: the probes' send times): Over if any gap is over even without its
/// starved stretch, else Inconclusive if any is over only with it, else Within.
pub fn judge_gaps<W>(
    gaps: &[Gap<W>],
    sends: &[Duration],
    interval: Duration,
    budget: Duration,
) -> Verdict {
    let verdicts: Vec<Verdict> = (gaps.iter())
        .map(|g| {
            let starved = starved(sends, g.start, g.start + g.length);
            judge(g.length, starved, interval, budget)
        })
        .collect();
    if verdicts.contains(&Verdict::Over) {
        Verdict::Over
    } else if verdicts.contains(&Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn answers(list: &[(u64, &'static str)]) -> Vec<(Duration, &'static str)> {
        list.iter().map(|(t, w)| (ms(*t), *w)).collect()
    }

    #[test]
    fn the_gap_around_a_fault_counts_from_the_last_answer_before_it() {
        let a = answers(&[(0, "a"), (10, "a"), (20, "a"), (450, "b"), (460, "b")]);
        let gap = longest_gap(&a, ms(25), ms(500));
        assert_eq!(gap.length, ms(430));
        assert_eq!((gap.before, gap.after), (Some("a"), Some("b")));
        assert_eq!(gap.less(ms(10)), ms(420));
    }

    #[test]
    fn an_answer_at_the_start_of_the_window_is_inside_it() {
        // The fault's own millisecond: the gap still counts from the answer before.
        let a = answers(&[(0, "a"), (10, "a"), (300, "b")]);
        assert_eq!(longest_gap(&a, ms(10), ms(300)).length, ms(290));
        assert_eq!(longest_gap(&a, ms(11), ms(300)).length, ms(290));
    }

    #[test]
    fn silence_up_to_the_end_of_the_window_is_a_gap_with_nobody_after() {
        let a = answers(&[(0, "a"), (10, "a"), (20, "b")]);
        let gap = longest_gap(&a, ms(5), ms(900));
        assert_eq!(gap.length, ms(880));
        assert_eq!((gap.before, gap.after), (Some("b"), None));
    }

    #[test]
    fn with_no_answer_before_the_window_the_gap_counts_from_its_start() {
        let a = answers(&[(300, "b"), (310, "b")]);
        let gap = longest_gap(&a, ms(100), ms(310));
        assert_eq!(gap.length, ms(200));
        assert_eq!((gap.before, gap.after), (None, Some("b")));
        assert_eq!(longest_gap::<&str>(&[], ms(100), ms(150)).length, ms(50));
    }

    #[test]
    fn answers_after_the_window_and_out_of_order_change_nothing() {
        let a = answers(&[(20, "a"), (0, "a"), (10, "a"), (2000, "b")]);
        let gap = longest_gap(&a, ms(15), ms(100));
        assert_eq!(gap.length, ms(80));
        assert_eq!((gap.before, gap.after), (Some("a"), None));
    }

    #[test]
    fn the_gap_starts_at_the_answer_before_it() {
        let a = answers(&[(0, "a"), (10, "a"), (300, "b")]);
        assert_eq!(longest_gap(&a, ms(5), ms(400)).start, ms(10));
        assert_eq!(longest_gap(&a, ms(350), ms(900)).start, ms(300));
        assert_eq!(longest_gap::<&str>(&[], ms(100), ms(150)).start, ms(100));
    }

    #[test]
    fn starvation_is_the_longest_stretch_without_a_send_edges_included() {
        let sends = [ms(5), ms(20), ms(30), ms(190), ms(200)];
        assert_eq!(starved(&sends, ms(10), ms(210)), ms(160));
        assert_eq!(starved(&sends, ms(195), ms(400)), ms(200));
        assert_eq!(starved(&[], ms(10), ms(50)), ms(40));
        // A probe every 10 ms: the spacing is all there is.
        let steady: Vec<Duration> = (0..30).map(|i| ms(i * 10)).collect();
        assert_eq!(starved(&steady, ms(0), ms(290)), ms(10));
    }

    #[test]
    fn a_gap_is_within_inconclusive_or_over_its_budget() {
        // Session 12's CI: 203 ms between two answers of the same holder, the probe
        // silent for 160 ms of them, budget 150 ms.
        let every = ms(10);
        assert_eq!(
            judge(ms(203), ms(160), every, ms(150)),
            Verdict::Inconclusive
        );
        assert_eq!(judge(ms(150), ms(0), every, ms(150)), Verdict::Within);
        assert_eq!(judge(ms(203), ms(10), every, ms(150)), Verdict::Over);
        assert_eq!(judge(ms(400), ms(200), every, ms(150)), Verdict::Over);
        // The probes' own spacing is no starvation: 160 ms of lost probes is over 150.
        assert_eq!(judge(ms(160), ms(10), every, ms(150)), Verdict::Over);
    }

    #[test]
    fn a_real_outage_beside_a_longer_starved_gap_is_over() {
        // 0-300 ms: answers every 10 ms but one gap 50-250 in which nothing was sent
        // (starved); 400-560: a real outage, probes sent and lost every 10 ms.
        let mut list: Vec<(u64, &str)> = (0..=5).map(|i| (i * 10, "a")).collect();
        list.extend((25..=40).map(|i| (i * 10, "a")));
        list.extend((56..=60).map(|i| (i * 10, "b")));
        let a = answers(&list);
        let mut sends: Vec<Duration> = (0..=60).map(|i| ms(i * 10)).collect();
        sends.retain(|s| *s <= ms(50) || *s >= ms(250));
        let all = gaps(&a, ms(0), ms(600));
        assert_eq!(longest_gap(&a, ms(0), ms(600)).length, ms(200));
        assert_eq!(judge_gaps(&all, &sends, ms(10), ms(150)), Verdict::Over);
        // Without the real outage, the starved gap alone is inconclusive.
        let calm: Vec<(Duration, &str)> = (a.iter()).filter(|x| x.0 <= ms(400)).cloned().collect();
        let calm_gaps = gaps(&calm, ms(0), ms(400));
        assert_eq!(
            judge_gaps(&calm_gaps, &sends, ms(10), ms(150)),
            Verdict::Inconclusive
        );
    }
}
