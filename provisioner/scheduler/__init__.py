"""The fleet-compatible cluster unit scheduler, on etcd v3 (docs/scheduler.md).

    unitfile, requirements   unit files and [X-Fleet] as fleet read them
    model                    frozen values: machines, jobs, schedule entries, unit states
    engine                   pure: decide(cluster) -> schedule changes (placement, failover)
    agentplan                pure: what an agent loads/starts/stops, what it keeps when cut off
    etcd, registry           the etcd v3 client and the key layout with guarded writes
    agent, daemon, config    fleetd: lease keeper, agent, engine leader; fleet.conf / FLEET_*
    backends/                how units run: systemd (real nodes) or processes (no systemd as PID 1)
    unitlogs                 where a unit's status and log are on its machine (fleetctl status, journal)
"""
