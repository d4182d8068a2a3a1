use super::*;
use crate::draining::DrainReason;
use crate::supervisor::memory_limit::MemoryLevel;

const GRACE: Duration = Duration::from_secs(30);
const HEALTH: Duration = Duration::from_secs(10);

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings(workers: usize, drain: DrainMode) -> Settings {
    Settings {
        workers,
        drain,
        graceful_timeout: GRACE,
        healthcheck_timeout: HEALTH,
        max_surge: 1,
        protocol: WorkerProtocol::Native,
        shutdown_delay: Duration::ZERO,
        max_startup_failures: 10,
        leaving: Leaving::AtOnce,
    }
}

/// A supervisor with `n` ready workers (pids 1..=n), started at `t0`.
fn serving(n: usize, drain: DrainMode, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(settings(n, drain));
    assert_eq!(sup.start(t0), vec![Action::Spawn; n]);
    for i in 1..=n as i32 {
        spawned(&mut sup, pid(i), t0);
    }
    for i in 1..=n as i32 {
        let actions = sup.handle(Event::WorkerReady(pid(i)), t0);
        if i == n as i32 {
            assert_eq!(actions, vec![Action::Notify(Status::Ready)]);
        } else {
            assert!(actions.is_empty(), "{actions:?}");
        }
    }
    sup
}

/// Reports a fork the loop carried out; it asks for nothing more.
fn spawned(sup: &mut Supervisor, pid: Pid, now: Instant) {
    let actions = sup.handle(Event::Spawned(pid), now);
    assert!(actions.is_empty(), "{actions:?}");
}

fn exited(n: i32) -> Event {
    Event::WorkerExited {
        pid: pid(n),
        exit: WorkerExit::Clean,
    }
}

fn stop(n: i32, within: Duration) -> Action {
    stop_for(n, within, DrainReason::Stop)
}

fn stop_for(n: i32, within: Duration, reason: DrainReason) -> Action {
    Action::StopWorker {
        pid: pid(n),
        within,
        reason,
    }
}

#[test]
fn ebpf_stop_waits_for_a_settled_empty_queue_before_stopping_workers() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    let term = sup.handle(Event::Command(Command::Stop), t0);
    assert_eq!(
        term,
        vec![
            Action::Notify(Status::Stopping),
            Action::RefuseNewConnections
        ]
    );
    assert!(sup.wants_queue_length());
    assert!(sup.handle(Event::QueueLength(3), t0 + ms(1)).is_empty());
    assert!(sup.handle(Event::QueueLength(0), t0 + ms(2)).is_empty());
    // A half-way handshake lands: the settle window starts over.
    assert!(sup.handle(Event::QueueLength(1), t0 + ms(3)).is_empty());
    assert!(sup.handle(Event::QueueLength(0), t0 + ms(4)).is_empty());
    assert!(sup.handle(Event::QueueLength(0), t0 + ms(8)).is_empty());
    let within = GRACE - ms(9) - WORKER_ABORT_MARGIN;
    assert_eq!(
        sup.handle(Event::QueueLength(0), t0 + ms(9)),
        vec![stop(1, within), stop(2, within), Action::CloseListener]
    );
    assert!(!sup.wants_queue_length());
    assert!(sup.handle(exited(1), t0 + ms(20)).is_empty());
    assert_eq!(
        sup.handle(exited(2), t0 + ms(21)),
        vec![Action::Exit(ShutdownOutcome::Graceful)]
    );
}

#[test]
fn close_mode_closes_the_parent_copy_before_stopping_workers() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Close, t0);
    let actions = sup.handle(Event::Command(Command::Stop), t0);
    assert_eq!(
        actions[..2],
        [Action::Notify(Status::Stopping), Action::CloseListener]
    );
    assert_eq!(actions.len(), 4);
    assert!(!sup.wants_queue_length());
}

#[test]
fn a_queue_that_never_empties_delays_the_stop_by_at_most_the_wait_limit() {
    let t0 = Instant::now();
    let mut sup = serving(1, DrainMode::Ebpf, t0);
    sup.handle(Event::Command(Command::Stop), t0);
    assert!(sup.handle(Event::QueueLength(5), t0 + ms(999)).is_empty());
    let actions = sup.handle(Event::QueueLength(5), t0 + QUEUE_WAIT_LIMIT);
    assert!(matches!(actions[0], Action::StopWorker { .. }));
}

#[test]
fn workers_alive_at_the_deadline_are_killed_and_the_exit_status_says_so() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Close, t0);
    sup.handle(Event::Command(Command::Stop), t0);
    assert_eq!(sup.next_wakeup(t0), Some(t0 + GRACE));
    assert!(sup.handle(Event::Tick, t0 + GRACE - ms(1)).is_empty());
    sup.handle(exited(1), t0 + ms(10));
    assert_eq!(
        sup.handle(Event::Tick, t0 + GRACE),
        vec![Action::Kill(pid(2))]
    );
    let last = Event::WorkerExited {
        pid: pid(2),
        exit: WorkerExit::Failed,
    };
    assert_eq!(
        sup.handle(last, t0 + GRACE),
        vec![Action::Exit(ShutdownOutcome::Forced)]
    );
}

#[test]
fn a_second_term_or_a_quit_stops_at_once() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Close, t0);
    sup.handle(Event::Command(Command::Stop), t0);
    let again = sup.handle(Event::Command(Command::Stop), t0 + ms(1));
    assert_eq!(
        again,
        vec![
            Action::Notify(Status::Stopping),
            Action::Kill(pid(1)),
            Action::Kill(pid(2)),
            Action::CloseListener
        ]
    );
    let mut sup = serving(1, DrainMode::Ebpf, t0);
    let quit = sup.handle(Event::Command(Command::StopNow), t0);
    assert_eq!(
        quit,
        vec![
            Action::Notify(Status::Stopping),
            Action::Kill(pid(1)),
            Action::CloseListener
        ]
    );
}

#[test]
fn an_unexpected_exit_is_replaced_at_once_and_a_crash_loop_backs_off() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Close, t0);
    assert_eq!(sup.handle(exited(1), t0), vec![Action::Spawn]);
    spawned(&mut sup, pid(3), t0);
    // The replacement dies before it is ready: the next start waits.
    assert!(sup.handle(exited(3), t0 + ms(5)).is_empty());
    assert_eq!(sup.next_wakeup(t0 + ms(5)), Some(t0 + ms(105)));
    assert!(sup.handle(Event::Tick, t0 + ms(50)).is_empty());
    assert_eq!(sup.handle(Event::Tick, t0 + ms(105)), vec![Action::Spawn]);
    spawned(&mut sup, pid(4), t0 + ms(105));
    assert!(sup.handle(exited(4), t0 + ms(110)).is_empty());
    assert_eq!(sup.next_wakeup(t0 + ms(110)), Some(t0 + ms(310)));
}

#[test]
fn scaling_down_drains_one_worker_and_does_not_replace_it() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    let actions = sup.handle(Event::Command(Command::RemoveWorker), t0);
    assert_eq!(
        actions,
        vec![stop_for(
            2,
            GRACE - WORKER_ABORT_MARGIN,
            DrainReason::ScaleDown
        )]
    );
    assert!(sup.handle(exited(2), t0 + ms(3)).is_empty());
    assert_eq!(
        sup.handle(Event::Command(Command::AddWorker), t0),
        vec![Action::Spawn]
    );
}

#[test]
fn a_spawn_not_yet_carried_out_is_not_asked_for_twice() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    assert_eq!(
        sup.handle(Event::Command(Command::AddWorker), t0),
        vec![Action::Spawn]
    );
    assert!(sup.handle(Event::Tick, t0).is_empty());
    spawned(&mut sup, pid(3), t0);
    assert!(sup.handle(Event::Tick, t0).is_empty());
}

#[test]
fn the_last_worker_is_never_scaled_away() {
    let t0 = Instant::now();
    let mut sup = serving(1, DrainMode::Ebpf, t0);
    assert!(sup
        .handle(Event::Command(Command::RemoveWorker), t0)
        .is_empty());
}

#[test]
fn a_rolling_restart_replaces_one_worker_at_a_time_and_never_serves_with_fewer() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    let hup = sup.handle(Event::Command(Command::Reload), t0);
    assert_eq!(hup, vec![Action::Notify(Status::Reloading), Action::Spawn]);
    spawned(&mut sup, pid(3), t0);
    // Until the replacement is ready, both old workers keep serving.
    assert!(sup.handle(Event::Tick, t0 + ms(5)).is_empty());
    let within = GRACE - WORKER_ABORT_MARGIN;
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(3)), t0),
        vec![stop_for(1, within, DrainReason::Restart), Action::Spawn]
    );
    spawned(&mut sup, pid(4), t0);
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(4)), t0),
        vec![
            stop_for(2, within, DrainReason::Restart),
            Action::Notify(Status::Ready)
        ]
    );
    assert!(sup.handle(exited(1), t0).is_empty());
    assert!(sup.handle(exited(2), t0).is_empty());
}

#[test]
fn a_worker_that_served_its_quota_is_stopped_only_once_its_replacement_is_ready() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    assert_eq!(
        sup.handle(Event::WorkerQuotaReached(pid(1)), t0),
        vec![Action::Spawn]
    );
    spawned(&mut sup, pid(3), t0);
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(3)), t0),
        vec![stop_for(
            1,
            GRACE - WORKER_ABORT_MARGIN,
            DrainReason::Recycle
        )]
    );
}

#[test]
fn a_silent_worker_is_replaced_and_a_busy_one_that_beats_is_not() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    for s in 1..10 {
        let at = t0 + Duration::from_secs(s);
        assert!(sup.handle(Event::WorkerHeartbeat(pid(2)), at).is_empty());
    }
    assert_eq!(sup.next_wakeup(t0 + ms(10)), Some(t0 + HEALTH));
    let hung = sup.handle(Event::Tick, t0 + HEALTH);
    assert_eq!(
        hung,
        vec![
            stop_for(1, GRACE - WORKER_ABORT_MARGIN, DrainReason::Recycle),
            Action::Spawn
        ]
    );
    // Gracefully first; killed if it is still there at its deadline.
    spawned(&mut sup, pid(3), t0 + HEALTH);
    sup.handle(Event::WorkerReady(pid(3)), t0 + HEALTH);
    sup.handle(Event::WorkerHeartbeat(pid(2)), t0 + HEALTH + GRACE);
    sup.handle(Event::WorkerHeartbeat(pid(3)), t0 + HEALTH + GRACE);
    assert_eq!(
        sup.handle(Event::Tick, t0 + HEALTH + GRACE),
        vec![Action::Kill(pid(1))]
    );
}

#[test]
fn a_worker_that_never_gets_ready_is_killed_after_the_health_timeout() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings(1, DrainMode::Ebpf));
    sup.start(t0);
    spawned(&mut sup, pid(1), t0);
    assert_eq!(
        sup.handle(Event::Tick, t0 + HEALTH),
        vec![Action::Kill(pid(1))]
    );
}

#[test]
fn an_upgrade_hands_over_without_refusing_and_exits_when_the_old_workers_are_gone() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    assert_eq!(
        sup.handle(Event::Command(Command::Upgrade), t0),
        vec![Action::StartUpgrade]
    );
    assert!(sup.handle(Event::Command(Command::Upgrade), t0).is_empty());
    let within = GRACE - WORKER_ABORT_MARGIN;
    assert_eq!(
        sup.handle(Event::UpgradeReady, t0),
        vec![
            stop_for(1, within, DrainReason::Restart),
            stop_for(2, within, DrainReason::Restart),
            Action::CloseListener
        ]
    );
    sup.handle(exited(1), t0);
    assert_eq!(
        sup.handle(exited(2), t0),
        vec![Action::Exit(ShutdownOutcome::Graceful)]
    );
}

#[test]
fn a_failed_upgrade_keeps_serving_and_can_be_retried() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    sup.handle(Event::Command(Command::Upgrade), t0);
    assert!(sup.handle(Event::UpgradeFailed, t0).is_empty());
    assert!(sup.handle(Event::UpgradeReady, t0).is_empty());
    assert_eq!(
        sup.handle(Event::Command(Command::Upgrade), t0),
        vec![Action::StartUpgrade]
    );
}

#[test]
fn external_workers_are_never_taken_for_hung_and_are_probed_until_ready() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(Settings {
        protocol: WorkerProtocol::External,
        ..settings(1, DrainMode::Ebpf)
    });
    sup.start(t0);
    spawned(&mut sup, pid(1), t0);
    assert_eq!(sup.next_wakeup(t0), Some(t0 + READINESS_PROBE_INTERVAL));
    // No sign of serving before the health timeout: taken as ready, not killed.
    assert_eq!(
        sup.handle(Event::Tick, t0 + HEALTH),
        vec![Action::Notify(Status::Ready)]
    );
    assert_eq!(sup.next_wakeup(t0 + HEALTH), None);
    assert!(sup.handle(Event::Tick, t0 + HEALTH * 5).is_empty());
}

#[test]
fn a_shutdown_delay_serves_on_with_readiness_off_before_the_stop() {
    let t0 = Instant::now();
    let delay = Duration::from_secs(5);
    let mut sup = Supervisor::new(Settings {
        shutdown_delay: delay,
        ..settings(2, DrainMode::Ebpf)
    });
    sup.start(t0);
    spawned(&mut sup, pid(1), t0);
    spawned(&mut sup, pid(2), t0);
    sup.handle(Event::WorkerReady(pid(1)), t0);
    sup.handle(Event::WorkerReady(pid(2)), t0);
    assert_eq!(
        sup.handle(Event::Command(Command::Stop), t0),
        vec![Action::Notify(Status::Stopping), Action::MarkUnready]
    );
    assert_eq!(sup.next_wakeup(t0), Some(t0 + delay));
    // A worker dying during the delay is not replaced: the server is on its way out.
    assert!(sup.handle(exited(2), t0 + ms(10)).is_empty());
    assert!(sup.handle(Event::Tick, t0 + delay - ms(1)).is_empty());
    assert_eq!(
        sup.handle(Event::Tick, t0 + delay),
        vec![Action::RefuseNewConnections]
    );
}

#[test]
fn workers_that_keep_dying_at_start_make_the_server_give_up() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(Settings {
        max_startup_failures: 3,
        ..settings(1, DrainMode::Ebpf)
    });
    sup.start(t0);
    let mut now = t0;
    for n in 1..=3 {
        spawned(&mut sup, pid(n), now);
        let actions = sup.handle(exited(n), now + ms(1));
        if n < 3 {
            assert!(actions.is_empty(), "{actions:?}");
            now = sup.next_wakeup(now + ms(1)).unwrap();
            assert_eq!(sup.handle(Event::Tick, now), vec![Action::Spawn]);
        } else {
            assert_eq!(
                actions,
                vec![Action::Exit(ShutdownOutcome::WorkersKeptFailing)]
            );
        }
    }
}

#[test]
fn a_failed_fork_is_retried_with_backoff_and_never_makes_the_server_give_up() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(Settings {
        max_startup_failures: 2,
        ..settings(2, DrainMode::Ebpf)
    });
    assert_eq!(sup.start(t0), vec![Action::Spawn; 2]);
    spawned(&mut sup, pid(1), t0);
    // The second fork fails (EAGAIN): no new spawn until the backoff has passed.
    assert!(sup.handle(Event::SpawnFailed, t0).is_empty());
    assert_eq!(sup.handle(Event::WorkerReady(pid(1)), t0), vec![]);
    let mut now = t0;
    for _ in 0..5 {
        let retry_at = sup.next_wakeup(now).unwrap();
        assert!(retry_at > now, "a retry is scheduled, not immediate");
        assert!(sup.handle(Event::Tick, retry_at - ms(1)).is_empty());
        assert_eq!(sup.handle(Event::Tick, retry_at), vec![Action::Spawn]);
        // Fails again: more forks failing than max_startup_failures, still serving.
        assert!(sup.handle(Event::SpawnFailed, retry_at).is_empty());
        now = retry_at;
    }
    // Forks work again: the full count is reached and announced.
    let retry_at = sup.next_wakeup(now).unwrap();
    assert_eq!(sup.handle(Event::Tick, retry_at), vec![Action::Spawn]);
    spawned(&mut sup, pid(2), retry_at);
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(2)), retry_at),
        vec![Action::Notify(Status::Ready)]
    );
}

#[test]
fn a_stop_while_forks_fail_stops_the_workers_there_are() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings(2, DrainMode::Close));
    sup.start(t0);
    spawned(&mut sup, pid(1), t0);
    sup.handle(Event::SpawnFailed, t0);
    sup.handle(Event::WorkerReady(pid(1)), t0);
    let stopping = sup.handle(Event::Command(Command::Stop), t0 + ms(10));
    assert_eq!(
        stopping,
        vec![
            Action::Notify(Status::Stopping),
            Action::CloseListener,
            stop(1, GRACE - WORKER_ABORT_MARGIN),
        ]
    );
    // No retry during the stop, and the exit comes with the last worker.
    assert!(sup.handle(Event::Tick, t0 + ms(10_000)).is_empty());
    assert_eq!(
        sup.handle(exited(1), t0 + ms(10_001)),
        vec![Action::Exit(ShutdownOutcome::Graceful)]
    );
}

#[test]
fn a_worker_over_the_memory_limit_is_replaced_like_a_quota_and_counted_as_memory() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    let over = over_memory(1, 210, MemoryLevel::Over);
    assert_eq!(sup.handle(over, t0), vec![Action::Spawn]);
    // Sampled again before its replacement is ready: nothing more happens.
    assert!(sup.handle(over, t0 + ms(250)).is_empty());
    spawned(&mut sup, pid(3), t0);
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(3)), t0),
        vec![stop_for(
            1,
            GRACE - WORKER_ABORT_MARGIN,
            DrainReason::Recycle
        )]
    );
    let counted = sup.restarts();
    assert_eq!(counted[RestartReason::Memory.index()], 1);
    assert_eq!(counted.iter().sum::<u64>(), 1);
}

fn over_memory(n: i32, mib: u64, level: MemoryLevel) -> Event {
    Event::WorkerOverMemory {
        pid: pid(n),
        rss_bytes: mib << 20,
        level,
    }
}

#[test]
fn far_over_the_limit_a_worker_drains_at_once_while_another_serves_and_the_last_one_waits() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    // Both over the limit, replacements slow to start: one surge slot, for worker 1.
    assert_eq!(
        sup.handle(over_memory(1, 210, MemoryLevel::Over), t0),
        vec![Action::Spawn]
    );
    spawned(&mut sup, pid(3), t0);
    assert!(sup
        .handle(over_memory(2, 210, MemoryLevel::Over), t0)
        .is_empty());
    // Worker 1 far over, worker 2 still serves: 1 drains without waiting for 3.
    assert_eq!(
        sup.handle(over_memory(1, 250, MemoryLevel::FarOver), t0 + ms(250)),
        vec![stop_for(
            1,
            GRACE - WORKER_ABORT_MARGIN,
            DrainReason::Recycle
        )]
    );
    // Worker 2 far over too, but it is the only one serving: it waits for 3.
    assert!(sup
        .handle(over_memory(2, 250, MemoryLevel::FarOver), t0 + ms(500))
        .is_empty());
    // 3 ready: 2 stays until its own replacement is ready, which now starts.
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(3)), t0 + ms(600)),
        vec![Action::Spawn]
    );
    // Far over with another worker serving: it drains now.
    assert_eq!(
        sup.handle(over_memory(2, 260, MemoryLevel::FarOver), t0 + ms(750)),
        vec![stop_for(
            2,
            GRACE - WORKER_ABORT_MARGIN,
            DrainReason::Recycle
        )]
    );
    let counted = sup.restarts();
    assert_eq!(counted[RestartReason::Memory.index()], 2);
}

#[test]
fn at_the_memory_ceiling_a_worker_is_killed_even_when_alone_or_draining() {
    let t0 = Instant::now();
    let mut sup = serving(1, DrainMode::Ebpf, t0);
    assert_eq!(
        sup.handle(over_memory(1, 300, MemoryLevel::AtCeiling), t0),
        vec![Action::Kill(pid(1)), Action::Spawn]
    );
    // Sampled again before it is reaped: killed once.
    assert!(sup
        .handle(over_memory(1, 300, MemoryLevel::AtCeiling), t0 + ms(250))
        .is_empty());
    // Its exit is no crash: counted once, as memory.
    assert!(sup.handle(exited(1), t0 + ms(300)).is_empty());
    let counted = sup.restarts();
    assert_eq!(counted[RestartReason::Memory.index()], 1);
    assert_eq!(counted.iter().sum::<u64>(), 1);

    // A draining worker that keeps growing is killed too.
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    sup.handle(over_memory(1, 250, MemoryLevel::FarOver), t0);
    assert_eq!(
        sup.handle(over_memory(1, 300, MemoryLevel::AtCeiling), t0 + ms(250)),
        vec![Action::Kill(pid(1))]
    );
}

#[test]
fn restarts_are_counted_by_reason() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    sup.handle(Event::Command(Command::Reload), t0);
    sup.handle(Event::WorkerQuotaReached(pid(1)), t0);
    sup.handle(Event::Command(Command::RemoveWorker), t0);
    let counted = sup.restarts();
    assert_eq!(counted[RestartReason::Reload.index()], 2);
    assert_eq!(counted[RestartReason::ScaleDown.index()], 1);
    // Already retiring for the reload: the quota changes nothing.
    assert_eq!(counted[RestartReason::Quota.index()], 0);
}

#[test]
fn scaling_down_during_a_rolling_restart_ends_with_the_desired_count() {
    let t0 = Instant::now();
    let mut sup = serving(2, DrainMode::Ebpf, t0);
    sup.handle(Event::Command(Command::Reload), t0);
    spawned(&mut sup, pid(3), t0);
    sup.handle(Event::WorkerReady(pid(3)), t0);
    // Worker 1 drains, 2 still serves until its replacement 4 is ready.
    spawned(&mut sup, pid(4), t0);
    let within = GRACE - WORKER_ABORT_MARGIN;
    // Found by the metrics test: removing the old worker 2 here left 3 and 4 for good.
    assert_eq!(
        sup.handle(Event::Command(Command::RemoveWorker), t0),
        vec![
            stop_for(4, within, DrainReason::ScaleDown),
            stop_for(2, within, DrainReason::Restart),
            // Worker 3 alone is the desired set: the restart is over.
            Action::Notify(Status::Ready),
        ]
    );
    assert!(sup.handle(Event::Tick, t0 + ms(5)).is_empty());
}

/// A supervisor of `n` ready external workers whose leaving waits for their queues.
fn serving_steered(n: usize, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(Settings {
        protocol: WorkerProtocol::External,
        leaving: Leaving::AfterItsQueueEmpties,
        ..settings(n, DrainMode::Ebpf)
    });
    assert_eq!(sup.start(t0), vec![Action::Spawn; n]);
    for i in 1..=n as i32 {
        spawned(&mut sup, pid(i), t0);
    }
    for i in 1..=n as i32 {
        let actions = sup.handle(Event::WorkerReady(pid(i)), t0);
        assert_eq!(
            actions.first(),
            Some(&Action::SteerTo(pid(i))),
            "{actions:?}"
        );
    }
    sup
}

fn queue_of(n: i32, len: u32) -> Event {
    Event::WorkerQueueLength { pid: pid(n), len }
}

#[test]
fn a_steered_worker_is_signalled_only_once_its_own_queue_has_stayed_empty() {
    let t0 = Instant::now();
    let mut sup = serving_steered(2, t0);
    assert_eq!(
        sup.handle(Event::Command(Command::Reload), t0),
        vec![Action::Notify(Status::Reloading), Action::Spawn]
    );
    spawned(&mut sup, pid(3), t0);
    // The replacement is ready: it joins the steering, the old worker leaves it.
    assert_eq!(
        sup.handle(Event::WorkerReady(pid(3)), t0 + ms(100)),
        vec![
            Action::SteerTo(pid(3)),
            Action::SteerAway(pid(1)),
            Action::Spawn
        ]
    );
    assert_eq!(sup.leaving_workers(), vec![pid(1)]);
    // Its queue still holds connections, then is empty, but not yet for long enough.
    assert!(sup.handle(queue_of(1, 3), t0 + ms(101)).is_empty());
    assert!(sup.handle(queue_of(1, 0), t0 + ms(102)).is_empty());
    assert!(sup.handle(queue_of(1, 0), t0 + ms(104)).is_empty());
    // A connection queued meanwhile starts the settle time over.
    assert!(sup.handle(queue_of(1, 1), t0 + ms(105)).is_empty());
    assert!(sup.handle(queue_of(1, 0), t0 + ms(106)).is_empty());
    let deadline = GRACE - WORKER_ABORT_MARGIN - ms(11);
    assert_eq!(
        sup.handle(queue_of(1, 0), t0 + ms(111)),
        vec![stop_for(1, deadline, DrainReason::Restart)]
    );
    assert!(sup.leaving_workers().is_empty());
}

#[test]
fn a_steered_worker_whose_queue_never_empties_is_signalled_at_the_wait_limit() {
    let t0 = Instant::now();
    let mut sup = serving_steered(2, t0);
    let actions = sup.handle(Event::Command(Command::RemoveWorker), t0);
    assert_eq!(
        actions.first(),
        Some(&Action::SteerAway(pid(2))),
        "{actions:?}"
    );
    assert_eq!(sup.next_wakeup(t0), Some(t0 + QUEUE_POLL));
    assert!(sup.handle(queue_of(2, 5), t0 + ms(500)).is_empty());
    let at_limit = t0 + QUEUE_WAIT_LIMIT;
    assert_eq!(
        sup.handle(Event::Tick, at_limit),
        vec![stop_for(
            2,
            GRACE - WORKER_ABORT_MARGIN - QUEUE_WAIT_LIMIT,
            DrainReason::ScaleDown
        )]
    );
}

#[test]
fn a_graceful_stop_signals_leaving_workers_with_the_others() {
    let t0 = Instant::now();
    let mut sup = serving_steered(2, t0);
    sup.handle(Event::Command(Command::RemoveWorker), t0);
    sup.handle(Event::Command(Command::Stop), t0);
    let stops = sup.handle(Event::QueueLength(0), t0);
    assert!(stops.is_empty());
    let stops = sup.handle(Event::QueueLength(0), t0 + QUEUE_SETTLE);
    let stopped: Vec<_> = stops
        .iter()
        .filter_map(|a| match a {
            Action::StopWorker { pid, .. } => Some(pid.as_raw()),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, vec![1, 2], "{stops:?}");
}
