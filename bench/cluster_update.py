"""Benchmark: the cluster's total update time, 3 nodes, the etcd-lock strategy with one lock holder.

The cluster demo (provisioner/demo/cluster.py, QEMU TCG) brings three blank machines up as a cluster;
then tests/vm/cluster/rolling_update.py publishes N+1 and starts the three update agents at once, as the
cluster acceptance test does. Measured, from the agents' start:

- total: until the last node has released the reboot lock (its new slot marked successful);
- apply: until the first node's VM went down (the three download, verify and write N+1 at once, then one
  takes the lock and reboots);
- per holder: acquired -> VM down -> lock released (its reboot and health check on N+1), read by polling
  the lock every 2 s, so each figure is +-2 s.

The peer is the same run's own floor: apply + the sum of the holders' turns, which is what one-at-a-time
costs with zero time between one release and the next acquisition. The ratio total / floor is what the
coordination itself adds (the waiting nodes' retry backoff, capped at 10 s here). There is no locksmith to
run beside it (it is Go, not packaged, and needs fleet's etcd v2), and the single-node apply against `dd`
is bench/update.py. One round takes ~17 min on 2 cores: rounds default to 1 (BENCH_CLUSTER_UPDATE_ROUNDS).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BENCH_CLUSTER_UPDATE_ROUNDS", "1"))


def one_round(number: int) -> dict:
    from provisioner.demo.cluster import ClusterConfig, ClusterDemo
    from provisioner.image.build import BuildOptions, build_image
    from tests.vm.cluster.rolling_update import restore_powered_off, rolling_update

    built = build_image(BuildOptions(output=REPO / "build/release", work=REPO / "build/image"))
    workdir = REPO / "build" / "bench-cluster-update" / f"round{number}"
    config = ClusterConfig(data_dir=REPO / "examples" / "cluster", release_dir=built.release_dir,
                           workdir=workdir / "cluster", netns=f"benchcl{os.getpid() % 10000}", accel="tcg")
    demo = ClusterDemo(config, keep=True)
    load_before = os.getloadavg()
    try:
        up = demo.run(on_event=lambda event: print(f"bench cluster_update: {event.at:6.1f} {event.node} "
                                                   f"{event.stage} {event.detail}", flush=True))
        restore_powered_off(demo)
        update = rolling_update(demo, built, workdir, time_turns=True)
    finally:
        demo.stop()
    turns = [{"node": span.node, "acquired": round(span.acquired, 1),
              "vm_down": None if span.rebooted is None else round(span.rebooted, 1),
              "released": None if span.released is None else round(span.released, 1)} for span in update.spans]
    apply = round(min(span.rebooted for span in update.spans if span.rebooted is not None), 1)
    held = [span.released - span.acquired for span in update.spans if span.released is not None]
    floor = apply + sum(held)
    handoffs = [later.acquired - earlier.released
                for earlier, later in zip(update.spans, update.spans[1:], strict=False) if earlier.released is not None]
    return {"round": number, "cluster_up_seconds": round(up.total, 1),
            "version_from": update.version_from, "version_to": update.version_to,
            "payload_bytes": update.payload_bytes, "total_seconds": round(update.total, 1),
            "apply_seconds": apply, "holder_turns": turns,
            "turn_seconds": [round(h, 1) for h in held], "handoff_seconds": [round(h, 1) for h in handoffs],
            "serial_floor_seconds": round(floor, 1), "total_over_floor": round(update.total / floor, 3),
            "max_holders": max(len(value.holders) for value in update.history),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> dict:
    rounds = []
    for number in range(1, ROUNDS + 1):
        started = time.monotonic()
        outcome = one_round(number)
        rounds.append(outcome)
        print(f"bench cluster_update: round {number}: {outcome['version_from']} -> {outcome['version_to']} on 3 "
              f"nodes in {outcome['total_seconds']} s (apply {outcome['apply_seconds']} s, turns "
              f"{outcome['turn_seconds']} s, handoffs {outcome['handoff_seconds']} s; total/floor "
              f"{outcome['total_over_floor']}; round {time.monotonic() - started:.0f} s)", flush=True)
    totals = [r["total_seconds"] for r in rounds]
    return {"accel": "tcg", "cpu_count": os.cpu_count(), "nodes": 3, "max_lock_holders": 1,
            "payload_bytes": rounds[0]["payload_bytes"], "rounds": rounds,
            "total_seconds_median": statistics.median(totals),
            "total_over_floor_median": statistics.median(r["total_over_floor"] for r in rounds)}
