//! Settings that change during a run: decision epochs.
//!
//! [`World::run`] replays one [`Tuning`] from start to end. In a cluster the
//! settings change while work runs: the tuner's CronJob publishes new knobs
//! every few hours into `carbon-kube-config`, and the extender, the gate
//! controller and the migrator apply them from their next decision on.
//! [`World::run_retuned`] replays that: at every decision epoch (the start
//! of the traces, then every [`Retuner::every_seconds`]) it shows a
//! [`Retuner`] what a controller can see at that moment ([`EpochView`]:
//! the traces and the forecast up to now, the jobs that have arrived, the
//! work held back, the room in use) and runs with the settings it returns
//! from then on. Decisions already taken stay (a release plan made under
//! the old settings keeps its time until it comes due and is looked at
//! again under the new ones), as in the cluster.

use carbon_kube_model::UnixSeconds;

use super::{Ev, Outcome, Policy, Run, Tuning, World};
use crate::trace::HOUR;

/// Chooses the settings at each decision epoch of a run.
pub trait Retuner {
    /// Seconds between decision epochs (at least a minute is used).
    fn every_seconds(&self) -> i64;

    /// The settings from this epoch on, given what a controller sees now;
    /// `None` keeps the current ones.
    fn retune(&mut self, view: &EpochView<'_, '_>) -> Option<Tuning>;
}

/// What a controller can see at a decision epoch. Everything in it is
/// known at `now`: [`EpochView::world`] also holds the future (the actual
/// traces, the jobs still to come), which a retuner must not read past
/// `now` (use [`EpochView::hour`] and [`EpochView::arrived`]).
pub struct EpochView<'r, 'a> {
    /// The world replayed (traces, cluster, jobs, forecast).
    pub world: &'r World<'a>,
    /// The epoch's time.
    pub now: UnixSeconds,
    /// Index of the epoch (0 at the start of the traces).
    pub epoch: usize,
    /// Hours of the traces before `now` (the snapshot of hour `hour` is the
    /// latest published).
    pub hour: usize,
    /// The settings in force until now.
    pub tuning: &'r Tuning,
    /// Jobs that have arrived but are not released yet (deferred, or held
    /// for room): the gate controller's queue of gated pods.
    pub held_jobs: usize,
    /// Their vCPU-hours.
    pub held_cpu_hours: f64,
    /// Jobs released but waiting for room (pending pods).
    pub waiting_jobs: usize,
    /// vCPUs requested on the nodes now, millicores.
    pub requested_cpu_millis: i64,
    /// vCPUs allocatable on the nodes, millicores.
    pub allocatable_cpu_millis: i64,
}

impl EpochView<'_, '_> {
    /// The jobs that arrived before `now` (the job list is sorted by arrival).
    pub fn arrived(&self) -> &[crate::workload::Job] {
        let jobs = self.world.jobs;
        &jobs[..jobs.partition_point(|j| j.arrival < self.now)]
    }
}

impl World<'_> {
    /// Runs one policy, letting `retuner` change the settings at every
    /// decision epoch (see the module's doc). With a retuner that always
    /// returns `None` this is [`World::run`].
    pub fn run_retuned(
        &self,
        policy: &Policy,
        retuner: &mut dyn Retuner,
        progress: &dyn Fn(u64),
    ) -> Outcome {
        let mut run = Run::new(self, policy);
        run.retuner = Some(retuner);
        run.go(progress)
    }
}

impl Run<'_, '_> {
    /// Takes the first decision (before any event of the run: the jobs
    /// arriving at the very start see its settings) and queues the later
    /// epochs of a retuned run. Nothing for a plain run.
    pub(super) fn schedule_retunes(&mut self) {
        let Some(r) = self.retuner.as_ref() else {
            return;
        };
        let every = r.every_seconds().max(60);
        let start = self.w.traces.start;
        let end = start + self.w.traces.hours() as i64 * HOUR;
        self.on_retune(start, 0);
        let mut t = start + every;
        let mut k = 1u32;
        while t < end {
            self.push(t, Ev::Retune, k);
            t += every;
            k += 1;
        }
    }

    /// A decision epoch: shows the retuner what a controller sees now and
    /// applies the settings it returns.
    pub(super) fn on_retune(&mut self, now: UnixSeconds, epoch: u32) {
        let arrived = self.w.jobs.partition_point(|j| j.arrival <= now);
        let mut held_jobs = 0;
        let mut held_cpu_hours = 0.0;
        for (j, st) in self.w.jobs[..arrived].iter().zip(&self.state) {
            if st.released.is_none() {
                held_jobs += 1;
                held_cpu_hours += j.vcpus() * j.duration as f64 / HOUR as f64;
            }
        }
        let (requested, allocatable) = self.nodes.iter().fold((0, 0), |(r, a), n| {
            (r + n.requested.cpu_millis, a + n.allocatable.cpu_millis)
        });
        let hour = usize::try_from(self.hour_of(now))
            .unwrap_or(0)
            .min(self.w.traces.hours().saturating_sub(1));
        let view = EpochView {
            world: self.w,
            now,
            epoch: epoch as usize,
            hour,
            tuning: &self.tuning,
            held_jobs,
            held_cpu_hours,
            waiting_jobs: self.pending.len(),
            requested_cpu_millis: requested,
            allocatable_cpu_millis: allocatable,
        };
        if let Some(r) = self.retuner.as_mut()
            && let Some(t) = r.retune(&view)
        {
            self.tuning = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use carbon_kube_model::ZoneId;

    use super::*;
    use crate::forecast::{ErrorModel, ForecastView};
    use crate::run::policy;
    use crate::trace::{TraceSet, ZoneTrace};
    use crate::workload::{ClusterSpec, Job};

    /// One zone, 48 hours: dirty (240 g/kWh) for the first 10 hours, then
    /// clean (60).
    fn traces() -> TraceSet {
        TraceSet {
            start: 0,
            zones: vec![ZoneTrace {
                zone: ZoneId::parse("DE").unwrap(),
                values: (0..48).map(|h| if h < 10 { 240.0 } else { 60.0 }).collect(),
            }],
            origin: "test".into(),
            modelled: false,
        }
    }

    /// A one-hour, 2-vCPU job arriving at `hour` with a day of slack.
    fn job(id: u32, hour: i64) -> Job {
        Job {
            id,
            arrival: hour * HOUR,
            duration: HOUR,
            cpu_millis: 2000,
            memory_mib: 1024,
            deadline: hour * HOUR + 25 * HOUR,
            interruptible: false,
        }
    }

    /// Defers for any saving.
    fn eager() -> Tuning {
        let mut t = Tuning::default();
        t.deferral.min_saving_fraction = 0.0;
        t
    }

    /// Defers for nothing less than the whole saving: never here.
    fn never() -> Tuning {
        let mut t = Tuning::default();
        t.deferral.min_saving_fraction = 1.0;
        t
    }

    /// Switches to `then` at epoch `at`; records what it saw.
    struct Switch {
        at: usize,
        then: Tuning,
        seen: Vec<(UnixSeconds, usize, f64, usize)>,
    }

    impl Retuner for Switch {
        fn every_seconds(&self) -> i64 {
            6 * HOUR
        }
        fn retune(&mut self, v: &EpochView<'_, '_>) -> Option<Tuning> {
            self.seen.push((
                v.now,
                v.held_jobs,
                v.tuning.deferral.min_saving_fraction,
                v.arrived().len(),
            ));
            (v.epoch == self.at).then(|| self.then.clone())
        }
    }

    #[test]
    fn a_setting_changed_at_an_epoch_applies_to_the_decisions_after_it() {
        let traces = traces();
        // One job before the switch at 6 h, one after.
        let jobs = vec![job(0, 1), job(1, 7)];
        let cluster = ClusterSpec::default_for(&traces, &jobs, 1.5);
        let ck = policy("carbon-kube", &Default::default()).unwrap();
        let world = |t: Tuning| {
            World::new(
                &traces,
                &cluster,
                &jobs,
                ForecastView::new(&traces, ErrorModel::PERFECT, 1),
                t,
            )
            .unwrap()
        };
        // Constant settings: both jobs wait for the clean hours, or neither.
        assert_eq!(world(eager()).run(&ck, &|_| {}).deferred_jobs, 2);
        assert_eq!(world(never()).run(&ck, &|_| {}).deferred_jobs, 0);
        // A retuner that never changes anything is the plain run.
        let mut keep = Switch {
            at: usize::MAX,
            then: never(),
            seen: Vec::new(),
        };
        let kept = world(eager()).run_retuned(&ck, &mut keep, &|_| {});
        assert_eq!(kept.deferred_jobs, 2);
        assert_eq!(
            kept.kg_co2.to_bits(),
            world(eager()).run(&ck, &|_| {}).kg_co2.to_bits()
        );
        // Eight epochs in 48 hours, every 6 hours from the start.
        let times: Vec<_> = keep.seen.iter().map(|s| s.0).collect();
        assert_eq!(times, (0..8).map(|k| k * 6 * HOUR).collect::<Vec<_>>());
        // At 6 h the first job is held (deferred) and only it has arrived.
        assert_eq!((keep.seen[1].1, keep.seen[1].3), (1, 1));

        // Eager until 6 h, never after: the first job waits, the second not.
        let mut switch = Switch {
            at: 1,
            then: never(),
            seen: Vec::new(),
        };
        let out = world(eager()).run_retuned(&ck, &mut switch, &|_| {});
        assert_eq!(out.deferred_jobs, 1);
        // The views show the setting in force: eager up to the switch, then
        // the new one.
        let in_force: Vec<f64> = switch.seen.iter().map(|s| s.2).collect();
        assert_eq!(in_force[..2], [0.0, 0.0]);
        assert!(in_force[2..].iter().all(|&m| m == 1.0), "{in_force:?}");
        // The other way round: the second job waits, the first not.
        let mut switch = Switch {
            at: 1,
            then: eager(),
            seen: Vec::new(),
        };
        let out = world(never()).run_retuned(&ck, &mut switch, &|_| {});
        assert_eq!(out.deferred_jobs, 1);
    }
}
