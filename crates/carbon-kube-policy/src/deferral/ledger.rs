//! The capacity ledger the release planner plans against.
//!
//! Per zone, per node and per time slot: the CPU and memory that running
//! pods use and that release plans have promised. A plan is only made for a
//! window in which **one node** has room for the pod's whole run (the room
//! of a zone summed over its nodes is not enough: a 30-vCPU pod needs 30
//! vCPUs on one node), after the work that already runs there and what
//! other plans were promised.
//!
//! What the caller books:
//!
//! - [`CapacityLedger::add_node`]: each schedulable node of a zone with its
//!   allocatable CPU and memory (or [`CapacityLedger::set_capacity`]: a zone
//!   as one pool, when nodes are not known);
//! - [`CapacityLedger::occupy`]: work that runs on a node now, until its
//!   expected end, or for the whole horizon when its end is unknown (work
//!   that was never deferred);
//! - [`CapacityLedger::promise`]: a plan, booked on the node that fits it
//!   most tightly (best fit keeps big holes for big pods), and
//!   [`CapacityLedger::withdraw`] when the plan changes or the pod starts.
//!
//! Zones the caller never described are not limited.

use std::collections::{BTreeMap, VecDeque};

use carbon_kube_model::{UnixSeconds, ZoneId};

use crate::zone_map::Resources;

/// Per zone, per node, per slot: what is used and promised. See the module
/// documentation.
#[derive(Clone, Debug)]
pub struct CapacityLedger {
    slot_seconds: i64,
    zones: BTreeMap<ZoneId, Vec<NodeBook>>,
}

#[derive(Clone, Debug)]
struct NodeBook {
    name: String,
    allocatable: Resources,
    /// Used for the whole horizon (work with no known end).
    base: Resources,
    /// Slot number of `used[0]`.
    origin: i64,
    /// Used per slot, on top of `base`.
    used: VecDeque<Resources>,
    /// The promises booked here: (slots `[from, to)`, need, urgency).
    promises: Vec<(i64, i64, Resources, UnixSeconds)>,
}

impl NodeBook {
    fn used_at(&self, slot: i64) -> Resources {
        let timed = if slot < self.origin {
            Resources::default()
        } else {
            usize::try_from(slot - self.origin)
                .ok()
                .and_then(|i| self.used.get(i).copied())
                .unwrap_or_default()
        };
        self.base.saturating_add(timed)
    }

    fn add(&mut self, from: i64, to: i64, need: Resources, add: bool) {
        if to <= from {
            return;
        }
        if self.used.is_empty() {
            self.origin = from;
        }
        while from < self.origin {
            self.used.push_front(Resources::default());
            self.origin -= 1;
        }
        for s in from..to {
            let Ok(i) = usize::try_from(s - self.origin) else {
                continue;
            };
            while self.used.len() <= i {
                self.used.push_back(Resources::default());
            }
            let v = &mut self.used[i];
            *v = if add {
                v.saturating_add(need)
            } else {
                v.saturating_sub(need)
            };
        }
    }

    /// What the promises of pods less urgent than `urgency` hold in `slot`.
    fn yielded(&self, slot: i64, urgency: Option<UnixSeconds>) -> Resources {
        let Some(urgency) = urgency else {
            return Resources::default();
        };
        self.promises
            .iter()
            .filter(|(a, b, _, u)| *u > urgency && *a <= slot && slot < *b)
            .fold(Resources::default(), |acc, (_, _, r, _)| {
                acc.saturating_add(*r)
            })
    }

    /// Whether `need` fits in `slot` with `limit` (allocatable × headroom),
    /// counting as free what less urgent promises hold when `urgency` is set.
    fn room_in(
        &self,
        slot: i64,
        limit: Resources,
        need: Resources,
        urgency: Option<UnixSeconds>,
    ) -> bool {
        let used = self
            .used_at(slot)
            .saturating_sub(self.yielded(slot, urgency));
        used.cpu_millis.saturating_add(need.cpu_millis) <= limit.cpu_millis
            && used.memory_bytes.saturating_add(need.memory_bytes) <= limit.memory_bytes
    }

    fn limit(&self, headroom: f64) -> Resources {
        let scale = |v: i64| {
            if v == i64::MAX {
                v
            } else {
                (v as f64 * headroom) as i64
            }
        };
        Resources::new(
            scale(self.allocatable.cpu_millis),
            scale(self.allocatable.memory_bytes),
        )
    }

    /// The smallest CPU left over the slots `[from, to)` after `need`
    /// (negative when it does not fit somewhere), counting as free what less
    /// urgent promises hold when `urgency` is set.
    fn tightest_cpu_left(
        &self,
        from: i64,
        to: i64,
        need: Resources,
        urgency: Option<UnixSeconds>,
    ) -> i64 {
        (from..to)
            .map(|s| {
                let used = self.used_at(s).saturating_sub(self.yielded(s, urgency));
                if used.memory_bytes.saturating_add(need.memory_bytes)
                    > self.allocatable.memory_bytes
                {
                    return -1;
                }
                self.allocatable.cpu_millis - used.cpu_millis - need.cpu_millis
            })
            .min()
            .unwrap_or(self.allocatable.cpu_millis - need.cpu_millis)
    }
}

/// A promise booked in the ledger, to withdraw with
/// [`CapacityLedger::withdraw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    zone: ZoneId,
    /// Index of the node in its zone; `None` when the zone is not limited.
    node: Option<usize>,
    from_slot: i64,
    to_slot: i64,
    need: Resources,
    urgency: UnixSeconds,
    fits: bool,
}

impl Booking {
    /// Whether the promise fitted on its node for its whole run when it was
    /// booked. A promise that does not fit is still booked (on the node with
    /// the most room), so the ledger never under-counts; the caller should
    /// plan that pod again.
    pub fn fits(&self) -> bool {
        self.fits
    }

    /// The zone of the promise.
    pub fn zone(&self) -> &ZoneId {
        &self.zone
    }
}

impl CapacityLedger {
    /// An empty ledger with slots of `slot_seconds` (e.g. the forecast step).
    pub fn new(slot_seconds: i64) -> Self {
        Self {
            slot_seconds: slot_seconds.max(1),
            zones: BTreeMap::new(),
        }
    }

    /// Length of a slot in seconds.
    pub fn slot_seconds(&self) -> i64 {
        self.slot_seconds
    }

    /// Adds a schedulable node of `zone` (a node added twice keeps the last
    /// allocatable).
    pub fn add_node(&mut self, zone: ZoneId, name: &str, allocatable: Resources) {
        let nodes = self.zones.entry(zone).or_default();
        match nodes.iter_mut().find(|n| n.name == name) {
            Some(n) => n.allocatable = allocatable,
            None => nodes.push(NodeBook {
                name: name.to_owned(),
                allocatable,
                base: Resources::default(),
                origin: 0,
                used: VecDeque::new(),
                promises: Vec::new(),
            }),
        }
    }

    /// Describes `zone` as one pool of `cpu_millis` (memory not limited), for
    /// callers that do not know its nodes. Replaces the zone's nodes.
    pub fn set_capacity(&mut self, zone: ZoneId, cpu_millis: u64) {
        let cpu = i64::try_from(cpu_millis).unwrap_or(i64::MAX);
        self.zones.insert(
            zone,
            vec![NodeBook {
                name: String::new(),
                allocatable: Resources::new(cpu, i64::MAX),
                base: Resources::default(),
                origin: 0,
                used: VecDeque::new(),
                promises: Vec::new(),
            }],
        );
    }

    /// Books work that runs on node `node` of `zone` from `from` until
    /// `until` (its expected end), or for the whole horizon when `until` is
    /// `None`. Returns false when the node is not in the ledger.
    pub fn occupy(
        &mut self,
        zone: &ZoneId,
        node: &str,
        from: UnixSeconds,
        until: Option<UnixSeconds>,
        need: Resources,
    ) -> bool {
        let step = self.slot_seconds;
        let Some(n) = self
            .zones
            .get_mut(zone)
            .and_then(|nodes| nodes.iter_mut().find(|n| n.name == node))
        else {
            return false;
        };
        match until {
            None => n.base = n.base.saturating_add(need),
            Some(end) => {
                let (a, b) = slots(step, from, end - from);
                n.add(a, b, need, true);
            }
        }
        true
    }

    /// Books a plan: `need` in `zone` over `[start, start + duration)`, on
    /// the node where it fits most tightly. See [`Booking::fits`].
    pub fn promise(
        &mut self,
        zone: &ZoneId,
        start: UnixSeconds,
        duration_seconds: i64,
        need: Resources,
        urgency: UnixSeconds,
        allowed: &[String],
    ) -> Booking {
        let (from, to) = slots(self.slot_seconds, start, duration_seconds);
        let mut booking = Booking {
            zone: zone.clone(),
            node: None,
            from_slot: from,
            to_slot: to,
            need,
            urgency,
            fits: true,
        };
        let Some(nodes) = self.zones.get_mut(zone) else {
            return booking;
        };
        // Best fit among the nodes with room (least CPU left over); else
        // among those with room once less urgent promises give theirs up;
        // else the node with the most room. Lower keys are better.
        let best = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| allowed.is_empty() || allowed.binary_search(&n.name).is_ok())
            .map(|(i, n)| {
                let left = n.tightest_cpu_left(from, to, need, None);
                let key = if left >= 0 {
                    (0, left)
                } else {
                    let yielding = n.tightest_cpu_left(from, to, need, Some(urgency));
                    if yielding >= 0 {
                        (1, yielding)
                    } else {
                        (2, -left)
                    }
                };
                (key, left >= 0, i)
            })
            .min_by_key(|(key, _, _)| *key)
            .map(|(_, fits, i)| (fits, i));
        if let Some((fits, i)) = best {
            nodes[i].add(from, to, need, true);
            nodes[i].promises.push((from, to, need, urgency));
            booking.node = Some(i);
            booking.fits = fits;
        }
        booking
    }

    /// The node a promise was booked on: where the pod's room is reserved
    /// (`None` when its zone is not limited).
    pub fn booked_node(&self, booking: &Booking) -> Option<&str> {
        let i = booking.node?;
        self.zones
            .get(&booking.zone)?
            .get(i)
            .map(|n| n.name.as_str())
    }

    /// Whether node `node` of `zone` has room for `need` from `start` for
    /// `duration_seconds` without breaking what runs there or was promised
    /// on it. A node the ledger does not know has room (not limited).
    pub fn fits_on_node(
        &self,
        zone: &ZoneId,
        node: &str,
        start: UnixSeconds,
        duration_seconds: i64,
        need: Resources,
    ) -> bool {
        let (from, to) = slots(self.slot_seconds, start, duration_seconds);
        self.zones
            .get(zone)
            .and_then(|nodes| nodes.iter().find(|n| n.name == node))
            .is_none_or(|n| {
                let limit = n.limit(1.0);
                (from..to).all(|s| n.room_in(s, limit, need, None))
            })
    }

    /// Whether node `node` of `zone` has room for `need` from `start` for
    /// `duration_seconds` if the promises of pods less urgent than
    /// `urgency` (a later latest start) gave their room up: how the most
    /// urgent pod takes room another plan had counted on (that plan is then
    /// made again). Running work is never displaced.
    pub fn fits_on_node_before(
        &self,
        zone: &ZoneId,
        node: &str,
        start: UnixSeconds,
        duration_seconds: i64,
        need: Resources,
        urgency: UnixSeconds,
    ) -> bool {
        let (from, to) = slots(self.slot_seconds, start, duration_seconds);
        self.zones
            .get(zone)
            .and_then(|nodes| nodes.iter().find(|n| n.name == node))
            .is_none_or(|n| {
                let limit = n.limit(1.0);
                (from..to).all(|s| n.room_in(s, limit, need, Some(urgency)))
            })
    }

    /// The nodes of `zone` among `allowed` (sorted; empty: all) where `need`
    /// fits from `start` for `duration_seconds` without breaking what runs
    /// there or was promised on it, tightest fit first (best fit keeps big
    /// holes for big pods). With `urgency`, the room promised to pods with a
    /// later latest start counts as free, as it does for the most urgent pod
    /// in [`CapacityLedger::fits_on_node_before`]. Empty when no node has
    /// room or the zone is not limited. Where a released pod should land:
    /// the gate controller prefers these nodes when it releases the pod.
    pub fn nodes_with_room(
        &self,
        zone: &ZoneId,
        allowed: &[String],
        start: UnixSeconds,
        duration_seconds: i64,
        need: Resources,
        urgency: Option<UnixSeconds>,
    ) -> Vec<String> {
        let (from, to) = slots(self.slot_seconds, start, duration_seconds);
        let Some(nodes) = self.zones.get(zone) else {
            return Vec::new();
        };
        let mut room: Vec<(i64, &str)> = nodes
            .iter()
            .filter(|n| allowed.is_empty() || allowed.binary_search(&n.name).is_ok())
            .filter(|n| !n.name.is_empty())
            .filter_map(|n| {
                let limit = n.limit(1.0);
                (from..to)
                    .all(|s| n.room_in(s, limit, need, urgency))
                    .then(|| {
                        (
                            n.tightest_cpu_left(from, to, need, urgency),
                            n.name.as_str(),
                        )
                    })
            })
            .collect();
        room.sort_unstable();
        room.into_iter().map(|(_, n)| n.to_owned()).collect()
    }

    /// Whether a booked promise still holds: on its node, over its slots,
    /// the work running there, the promises of pods at least as urgent and
    /// its own need fit the node (less urgent promises would give their room
    /// up). False once a more urgent pod took the room: that plan must be
    /// made again. A promise in a zone that is not limited always holds.
    pub fn still_fits(&self, booking: &Booking) -> bool {
        let Some(n) = booking
            .node
            .and_then(|i| self.zones.get(&booking.zone).and_then(|z| z.get(i)))
        else {
            return true;
        };
        let limit = n.limit(1.0);
        (booking.from_slot..booking.to_slot).all(|s| {
            let used = n
                .used_at(s)
                .saturating_sub(n.yielded(s, Some(booking.urgency)));
            used.cpu_millis <= limit.cpu_millis && used.memory_bytes <= limit.memory_bytes
        })
    }

    /// Withdraws a promise.
    pub fn withdraw(&mut self, booking: &Booking) {
        if let Some(i) = booking.node
            && let Some(n) = self.zones.get_mut(&booking.zone).and_then(|z| z.get_mut(i))
        {
            n.add(booking.from_slot, booking.to_slot, booking.need, false);
            let key = (
                booking.from_slot,
                booking.to_slot,
                booking.need,
                booking.urgency,
            );
            if let Some(k) = n.promises.iter().position(|p| *p == key) {
                n.promises.swap_remove(k);
            }
        }
    }

    /// Drops every slot that ends before `t`.
    pub fn forget_before(&mut self, t: UnixSeconds) {
        let slot = t.div_euclid(self.slot_seconds);
        for n in self.zones.values_mut().flatten() {
            while n.origin < slot && !n.used.is_empty() {
                n.used.pop_front();
                n.origin += 1;
            }
            n.promises.retain(|(_, to, _, _)| *to > slot);
        }
    }

    /// Millicores used or promised in `zone` (all nodes) during the slot
    /// containing `t`.
    pub fn cpu_used_at(&self, zone: &ZoneId, t: UnixSeconds) -> u64 {
        let slot = t.div_euclid(self.slot_seconds);
        self.zones.get(zone).map_or(0, |nodes| {
            nodes
                .iter()
                .map(|n| u64::try_from(n.used_at(slot).cpu_millis).unwrap_or(0))
                .sum()
        })
    }

    /// The slots `[from, to)` that a run of `duration_seconds` from `start` touches.
    pub(crate) fn slots(&self, start: UnixSeconds, duration_seconds: i64) -> (i64, i64) {
        slots(self.slot_seconds, start, duration_seconds)
    }

    /// Which of `n_starts` consecutive starts, the first at slot
    /// `first_slot`, have one node of `zone` with room for `need` over
    /// `run_slots` slots, each node filled to at most `headroom` of its
    /// allocatable, among the `allowed` nodes (sorted; empty: all); with
    /// `yield_after`, the room promised to pods whose latest start is later
    /// than it counts as free. Writes one flag per start into `out`; returns false (and
    /// leaves `out` empty) when the zone is not limited.
    #[expect(
        clippy::too_many_arguments,
        reason = "the planner's inner query: plain values and two reused buffers, called in one place per kind of window"
    )]
    pub(crate) fn fitting_starts(
        &self,
        zone: &ZoneId,
        first_slot: i64,
        n_starts: usize,
        run_slots: usize,
        need: Resources,
        headroom: f64,
        yield_after: Option<UnixSeconds>,
        allowed: &[String],
        out: &mut Vec<bool>,
        scratch: &mut Vec<u32>,
    ) -> bool {
        out.clear();
        let Some(nodes) = self.zones.get(zone) else {
            return false;
        };
        out.resize(n_starts, false);
        let run = run_slots.max(1);
        let span = n_starts + run - 1;
        let mut missing = n_starts;
        for node in nodes {
            if missing == 0 {
                break;
            }
            if !allowed.is_empty() && allowed.binary_search(&node.name).is_err() {
                continue;
            }
            let limit = node.limit(headroom);
            if need.cpu_millis > limit.cpu_millis || need.memory_bytes > limit.memory_bytes {
                continue;
            }
            // scratch[s]: consecutive slots with room from slot s on.
            scratch.clear();
            scratch.resize(span + 1, 0);
            for s in (0..span).rev() {
                scratch[s] = if node.room_in(first_slot + s as i64, limit, need, yield_after) {
                    scratch[s + 1] + 1
                } else {
                    0
                };
            }
            for (k, fits) in out.iter_mut().enumerate() {
                if !*fits && scratch[k] as usize >= run {
                    *fits = true;
                    missing -= 1;
                }
            }
        }
        true
    }
}

fn slots(step: i64, start: UnixSeconds, duration_seconds: i64) -> (i64, i64) {
    let from = start.div_euclid(step);
    let end = start + duration_seconds.max(1);
    let to = (end + step - 1).div_euclid(step);
    (from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const T0: i64 = 1_700_000_400 - 1_700_000_400 % H;
    const GIB: i64 = 1 << 30;

    fn zone(z: &str) -> ZoneId {
        ZoneId::parse(z).expect("zone")
    }

    fn fitting(
        l: &CapacityLedger,
        z: &ZoneId,
        first: i64,
        n: usize,
        run: usize,
        cpu: i64,
    ) -> Vec<bool> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        l.fitting_starts(
            z,
            first,
            n,
            run,
            Resources::new(cpu, GIB),
            1.0,
            None,
            &[],
            &mut out,
            &mut scratch,
        );
        out
    }

    #[test]
    fn a_pod_needs_room_on_one_node_not_in_the_zone_sum() {
        // Two 32-vCPU nodes, 20 vCPUs used on each: 24 free in the zone, but
        // no node has 16.
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        for n in ["a", "b"] {
            l.add_node(de.clone(), n, Resources::new(32_000, 128 * GIB));
            assert!(l.occupy(&de, n, T0, None, Resources::new(20_000, 10 * GIB)));
        }
        let s = T0 / H;
        assert_eq!(fitting(&l, &de, s, 3, 1, 16_000), vec![false; 3]);
        assert_eq!(fitting(&l, &de, s, 3, 1, 12_000), vec![true; 3]);
    }

    #[test]
    fn work_with_a_known_end_frees_its_node_afterwards() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "a", Resources::new(32_000, 128 * GIB));
        l.occupy(&de, "a", T0, Some(T0 + 2 * H), Resources::new(30_000, GIB));
        let s = T0 / H;
        // A 2-hour run of 8 vCPUs fits from slot 2 on.
        assert_eq!(
            fitting(&l, &de, s, 4, 2, 8_000),
            vec![false, false, true, true]
        );
    }

    #[test]
    fn promises_go_to_the_tightest_node_and_withdraw_cleanly() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "big", Resources::new(32_000, 128 * GIB));
        l.add_node(de.clone(), "small", Resources::new(8_000, 32 * GIB));
        let b = l.promise(&de, T0, H, Resources::new(6_000, GIB), T0, &[]);
        assert!(b.fits());
        // Best fit used the small node: 32 vCPUs are still free on one node.
        let s = T0 / H;
        assert_eq!(fitting(&l, &de, s, 1, 1, 32_000), vec![true]);
        assert_eq!(l.cpu_used_at(&de, T0), 6_000);
        l.withdraw(&b);
        assert_eq!(l.cpu_used_at(&de, T0), 0);
        // A promise that fits nowhere is still booked, and says so.
        let over = l.promise(&de, T0, H, Resources::new(40_000, GIB), T0, &[]);
        assert!(!over.fits());
        assert_eq!(l.cpu_used_at(&de, T0), 40_000);
    }

    #[test]
    fn the_urgent_pod_may_take_room_promised_to_a_less_urgent_one() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "a", Resources::new(32_000, 128 * GIB));
        l.occupy(&de, "a", T0, None, Resources::new(2_000, GIB));
        // A small pod whose latest start is a day away was promised an hour
        // of this node; a 30-vCPU pod that must start within hours cannot
        // use the node as booked, but may take that room.
        l.promise(&de, T0 + H, H, Resources::new(4_000, GIB), T0 + 24 * H, &[]);
        let big = Resources::new(30_000, GIB);
        assert!(!l.fits_on_node(&de, "a", T0, 2 * H, big));
        assert!(l.fits_on_node_before(&de, "a", T0, 2 * H, big, T0 + 3 * H));
        // Not from a pod that is more urgent, and never from running work.
        assert!(!l.fits_on_node_before(&de, "a", T0, 2 * H, big, T0 + 48 * H));
        let huge = Resources::new(31_000, GIB);
        assert!(!l.fits_on_node_before(&de, "a", T0, 2 * H, huge, T0 + 3 * H));
    }

    #[test]
    fn a_promise_broken_by_more_urgent_work_says_so_and_less_urgent_work_does_not_break_it() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "a", Resources::new(32_000, 128 * GIB));
        let b = l.promise(
            &de,
            T0 + 2 * H,
            H,
            Resources::new(24_000, GIB),
            T0 + 3 * H,
            &[],
        );
        assert!(b.fits() && l.still_fits(&b));
        // A less urgent promise over the same hours: it yields, b holds.
        let lazy = l.promise(
            &de,
            T0 + 2 * H,
            H,
            Resources::new(8_000, GIB),
            T0 + 20 * H,
            &[],
        );
        assert!(l.still_fits(&b));
        l.withdraw(&lazy);
        // More urgent work started there for 4 hours: b's room is gone.
        l.occupy(&de, "a", T0, Some(T0 + 4 * H), Resources::new(10_000, GIB));
        assert!(!l.still_fits(&b));
        l.withdraw(&b);
        assert_eq!(l.cpu_used_at(&de, T0 + 2 * H), 10_000);
    }

    #[test]
    fn headroom_keeps_a_share_of_each_node_for_work_that_is_not_deferred() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "a", Resources::new(10_000, 64 * GIB));
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let need = Resources::new(9_000, GIB);
        l.fitting_starts(
            &de,
            T0 / H,
            1,
            1,
            need,
            0.8,
            None,
            &[],
            &mut out,
            &mut scratch,
        );
        assert_eq!(out, vec![false]);
        l.fitting_starts(
            &de,
            T0 / H,
            1,
            1,
            need,
            1.0,
            None,
            &[],
            &mut out,
            &mut scratch,
        );
        assert_eq!(out, vec![true]);
    }

    #[test]
    fn zones_without_nodes_are_not_limited_and_memory_counts() {
        let mut l = CapacityLedger::new(H);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert!(!l.fitting_starts(
            &zone("GB"),
            0,
            3,
            1,
            Resources::new(1, 1),
            1.0,
            None,
            &[],
            &mut out,
            &mut scratch
        ));
        let de = zone("DE");
        l.add_node(de.clone(), "a", Resources::new(32_000, 8 * GIB));
        assert_eq!(
            {
                l.fitting_starts(
                    &de,
                    T0 / H,
                    1,
                    1,
                    Resources::new(1_000, 9 * GIB),
                    1.0,
                    None,
                    &[],
                    &mut out,
                    &mut scratch,
                );
                out.clone()
            },
            vec![false]
        );
    }

    #[test]
    fn only_the_nodes_a_pod_may_use_count() {
        // A pod pinned by its node selector to the full node has no room,
        // however empty its zone's other nodes are.
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.add_node(de.clone(), "empty", Resources::new(8_000, 32 * GIB));
        l.add_node(de.clone(), "full", Resources::new(8_000, 32 * GIB));
        l.occupy(&de, "full", T0, None, Resources::new(8_000, GIB));
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let need = Resources::new(1_000, GIB);
        let only_full = ["full".to_owned()];
        l.fitting_starts(
            &de,
            T0 / H,
            1,
            1,
            need,
            1.0,
            None,
            &only_full,
            &mut out,
            &mut scratch,
        );
        assert_eq!(out, vec![false]);
        l.fitting_starts(
            &de,
            T0 / H,
            1,
            1,
            need,
            1.0,
            None,
            &[],
            &mut out,
            &mut scratch,
        );
        assert_eq!(out, vec![true]);
        let b = l.promise(&de, T0, H, need, T0, &only_full);
        assert!(!b.fits());
        assert_eq!(l.booked_node(&b), Some("full"));
    }

    #[test]
    fn forgets_old_slots() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        l.set_capacity(de.clone(), 10_000);
        l.promise(&de, T0 - 5 * H, H, Resources::new(100, 0), T0, &[]);
        assert_eq!(l.cpu_used_at(&de, T0 - 5 * H), 100);
        l.forget_before(T0);
        assert_eq!(l.cpu_used_at(&de, T0 - 5 * H), 0);
    }

    #[test]
    fn nodes_with_room_are_tightest_first_and_skip_room_promised_to_others() {
        let de = zone("DE");
        let mut l = CapacityLedger::new(H);
        for (name, cpu) in [("big", 16_000), ("small", 4_000), ("mid", 8_000)] {
            l.add_node(de.clone(), name, Resources::new(cpu, 64 * GIB));
        }
        let need = Resources::new(3_000, GIB);
        // All three fit a 3-core run; the tightest fit comes first.
        assert_eq!(
            l.nodes_with_room(&de, &[], T0, H, need, None),
            ["small", "mid", "big"]
        );
        // The allowed list limits them (sorted, as the caller passes it).
        let allowed = ["big".to_owned(), "mid".to_owned()];
        assert_eq!(
            l.nodes_with_room(&de, &allowed, T0, H, need, None),
            ["mid", "big"]
        );
        // Room promised on `small` (to a pod whose latest start is T0 + 5 h)
        // is not offered to a pod released now...
        let booked = l.promise(&de, T0, 2 * H, Resources::new(3_000, GIB), T0 + 5 * H, &[]);
        assert_eq!(l.booked_node(&booked), Some("small"));
        assert_eq!(
            l.nodes_with_room(&de, &[], T0, H, need, None),
            ["mid", "big"]
        );
        // ...unless the released pod is more urgent (a deadline release).
        assert_eq!(
            l.nodes_with_room(&de, &[], T0, H, need, Some(T0 + H)),
            ["small", "mid", "big"]
        );
        // A less urgent pod does not take it either.
        assert_eq!(
            l.nodes_with_room(&de, &[], T0, H, need, Some(T0 + 9 * H)),
            ["mid", "big"]
        );
        // After the promise's run, `small` has room again.
        assert_eq!(
            l.nodes_with_room(&de, &[], T0 + 2 * H, H, need, None),
            ["small", "mid", "big"]
        );
        // Too big for any node, or a zone the ledger does not limit: none.
        assert!(
            l.nodes_with_room(&de, &[], T0, H, Resources::new(20_000, GIB), None)
                .is_empty()
        );
        assert!(
            l.nodes_with_room(&zone("FR"), &[], T0, H, need, None)
                .is_empty()
        );
    }
}
