"""The engine's pure decision, on fleet's scheduling scenarios (functional/scheduling_test.go)."""

from __future__ import annotations

from provisioner.scheduler.engine import ClusterSnapshot, Put, Remove, decide
from provisioner.scheduler.model import Assignment, DesiredState, Job, Machine
from provisioner.scheduler.requirements import requirements_of
from provisioner.scheduler.unitfile import UnitFile

LAUNCHED = DesiredState.LAUNCHED


def job(name: str, xfleet: str = "", state: DesiredState = LAUNCHED, unit_hash: str = "h") -> Job:
    unit = UnitFile.parse("[Service]\nExecStart=/bin/true\n" + (f"[X-Fleet]\n{xfleet}" if xfleet else ""))
    return Job(name, unit_hash, state, requirements_of(unit, name))


def machines(*ids: str, **metadata: dict) -> dict[str, Machine]:
    return {i: Machine(i, f"10.0.0.{n}", tuple(sorted(metadata.get(i, {}).items()))) for n, i in enumerate(ids, 1)}


def converge(jobs: list[Job], live: dict[str, Machine], schedule=()) -> tuple[dict[tuple[str, str], Assignment], list]:
    """Apply decide() until it has nothing more to do (as the daemon would, pass after pass)."""
    entries = {(a.unit, a.machine): a for a in schedule}
    history = []
    for _ in range(10):
        actions = decide(ClusterSnapshot({j.name: j for j in jobs}, live, tuple(entries.values())))
        if not actions:
            return entries, history
        history.extend(actions)
        for action in actions:
            if isinstance(action, Put):
                entries[(action.assignment.unit, action.assignment.machine)] = action.assignment
            else:
                del entries[(action.unit, action.machine)]
    raise AssertionError(f"no convergence: {history[-5:]}")


def where(entries) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for unit, machine in sorted(entries):
        result.setdefault(unit, []).append(machine)
    return result


def test_least_loaded_with_machine_id_tie_break():
    live = machines("m3", "m1", "m2")
    entries, _ = converge([job(f"u{i}.service") for i in range(6)], live)
    placed = where(entries)
    assert placed["u0.service"] == ["m1"] and placed["u1.service"] == ["m2"] and placed["u2.service"] == ["m3"]
    assert sorted(m for ms in placed.values() for m in ms).count("m1") == 2  # 6 units, 3 machines: 2 each


def test_existing_units_count_as_load():
    live = machines("m1", "m2")
    schedule = [Assignment("a.service", "m1", "h", LAUNCHED)]
    entries, _ = converge([job("a.service"), job("b.service")], live, schedule)
    assert where(entries) == {"a.service": ["m1"], "b.service": ["m2"]}


def test_conflicts_spread_instances_and_leave_the_rest_unscheduled():
    live = machines("m1", "m2", "m3")
    units = [job(f"nginx@{i}.service", "Conflicts=nginx@*.service\n") for i in range(1, 6)]
    entries, _ = converge(units, live)
    placed = where(entries)
    assert len(placed) == 3  # more conflicting units than machines: two stay unscheduled
    assert sorted(m for ms in placed.values() for m in ms) == ["m1", "m2", "m3"]


def test_one_way_conflict_is_honoured_from_either_side():
    live = machines("m1")
    entries, _ = converge([job("a.service", "Conflicts=b.service\n"), job("b.service")], live)
    assert len(where(entries)) == 1
    entries, _ = converge([job("a.service"), job("b.service", "Conflicts=a.service\n")], live)
    assert len(where(entries)) == 1


def test_machine_of_colocates_and_follows_its_peer():
    live = machines("m1", "m2", "m3")
    units = [job("ping.0.service"), job("pong.0.service", "MachineOf=ping.0.service\n"),
             job("a.service"), job("b.service")]
    entries, _ = converge(units, live)
    placed = where(entries)
    assert placed["pong.0.service"] == placed["ping.0.service"]
    # The peer's machine dies: the peer moves, and the follower moves with it, in one decision.
    dead = placed["ping.0.service"][0]
    survivors = {k: v for k, v in live.items() if k != dead}
    entries, _ = converge(units, survivors, entries.values())
    placed = where(entries)
    assert placed["ping.0.service"] == placed["pong.0.service"] and placed["ping.0.service"][0] in survivors


def test_follower_without_its_peer_is_not_scheduled():
    entries, _ = converge([job("pong.service", "MachineOf=ping.service\n")], machines("m1"))
    assert entries == {}


def test_metadata_selects_machines():
    live = machines("m1", "m2", "m3", m2={"region": "eu"}, m3={"region": "us", "disk": "ssd"})
    units = [job("eu.service", "MachineMetadata=region=eu\n"),
             job("any.service", 'MachineMetadata="region=eu" "region=us"\nMachineMetadata=disk=ssd\n'),
             job("none.service", "MachineMetadata=region=asia\n")]
    placed = where(converge(units, live)[0])
    assert placed == {"eu.service": ["m2"], "any.service": ["m3"]}


def test_machine_id_pins_by_full_or_short_id_and_templates_substitute():
    live = {"0123456789abcdef": Machine("0123456789abcdef"), "fedcba9876543210": Machine("fedcba9876543210")}
    units = [job("pin@fedcba98.service", "MachineID=%i\n"), job("full.service", "MachineID=0123456789abcdef\n")]
    placed = where(converge(units, live)[0])
    assert placed == {"pin@fedcba98.service": ["fedcba9876543210"], "full.service": ["0123456789abcdef"]}


def test_global_units_run_on_every_matching_machine_and_count_as_load():
    live = machines("m1", "m2", "m3", m3={"role": "edge"})
    units = [job("global.service", "Global=true\n"), job("edge.service", "Global=true\nMachineMetadata=role=edge\n"),
             job("x.service")]
    placed = where(converge(units, live)[0])
    assert placed["global.service"] == ["m1", "m2", "m3"]
    assert placed["edge.service"] == ["m3"]
    assert placed["x.service"] == ["m1"]  # m3 carries two units, m1 and m2 one: m1 by ID


def test_global_conflicts_keep_instances_apart():
    live = machines("m1", "m2")
    units = [job("conflict-global.0.service", "Global=true\nConflicts=conflict-global.*.service\n"),
             job("conflict-global.1.service", "Global=true\nConflicts=conflict-global.*.service\n")]
    placed = where(converge(units, live)[0])
    assert placed == {"conflict-global.0.service": ["m1", "m2"]}
    # A non-global unit conflicting with a global one finds no machine.
    placed = where(converge([units[0], job("c.service", "Conflicts=conflict-global.*\n")], live)[0])
    assert "c.service" not in placed


def test_replaces_takes_the_replaced_units_machine_and_moves_it_away():
    live = machines("m0", "m1")
    schedule = [Assignment("replace.0.service", "m0", "h", LAUNCHED),
                Assignment("replace.1.service", "m1", "h", LAUNCHED),
                Assignment("replace.2.service", "m1", "h", LAUNCHED)]
    units = [job("replace.0.service"), job("replace.1.service"),
             job("replace.2.service", "MachineOf=replace.1.service\n"),
             job("replace-kick0.service", "Replaces=replace.0.service\n")]
    entries, history = converge(units, live, schedule)
    placed = where(entries)
    assert placed["replace-kick0.service"] == ["m0"] and placed["replace.0.service"] == ["m1"]
    assert any(isinstance(a, Remove) and a.unit == "replace.0.service" and "replaced" in a.reason for a in history)


def test_circular_replaces_are_ignored():
    live = machines("m0")
    units = [job("a.service", "Replaces=b.service\n"), job("b.service", "Replaces=a.service\n")]
    placed = where(converge(units, live)[0])
    assert placed == {"a.service": ["m0"], "b.service": ["m0"]}


def test_dead_machine_units_move_and_unmovable_ones_stay():
    live = machines("m1", "m2")
    schedule = [Assignment("web.service", "m9", "h", LAUNCHED),
                Assignment("pinned.service", "m9", "h", LAUNCHED),
                Assignment("global.service", "m9", "h", LAUNCHED)]
    units = [job("web.service"), job("pinned.service", "MachineID=m9\n"), job("global.service", "Global=true\n")]
    entries, history = converge(units, live, schedule)
    placed = where(entries)
    assert placed["web.service"] == ["m1"]
    assert placed["pinned.service"] == ["m9"]  # waits for its machine instead of being dropped
    assert placed["global.service"] == ["m1", "m2", "m9"]
    assert any(isinstance(a, Remove) and a.reason == "target Machine(m9) went away" for a in history)


def test_inactive_destroyed_and_changed_units():
    live = machines("m1")
    schedule = [Assignment("off.service", "m1", "h", LAUNCHED), Assignment("gone.service", "m1", "h", LAUNCHED),
                Assignment("edit.service", "m1", "old", LAUNCHED)]
    units = [job("off.service", state=DesiredState.INACTIVE), job("edit.service", unit_hash="new",
                                                                   state=DesiredState.LOADED)]
    actions = decide(ClusterSnapshot({j.name: j for j in units}, live, tuple(schedule)))
    removes = {(a.unit, a.reason) for a in actions if isinstance(a, Remove)}
    assert removes == {("off.service", "target state inactive"), ("gone.service", "unit destroyed")}
    puts = [a.assignment for a in actions if isinstance(a, Put)]
    assert puts == [Assignment("edit.service", "m1", "new", DesiredState.LOADED)]


def test_a_machine_that_can_no_longer_run_a_unit_loses_it():
    live = machines("m1", "m2", m2={"region": "eu"})
    schedule = [Assignment("eu.service", "m1", "h", LAUNCHED)]
    entries, history = converge([job("eu.service", "MachineMetadata=region=eu\n")], live, schedule)
    assert where(entries) == {"eu.service": ["m2"]}
    assert any("local Machine metadata insufficient" in a.reason for a in history if isinstance(a, Remove))


def test_nothing_to_do_is_an_empty_decision():
    live = machines("m1")
    schedule = (Assignment("a.service", "m1", "h", LAUNCHED),)
    assert decide(ClusterSnapshot({"a.service": job("a.service")}, live, schedule)) == []


def test_large_cluster_is_balanced():
    live = machines(*[f"m{i:03d}" for i in range(100)])
    entries, _ = converge([job(f"u{i}.service") for i in range(1000)], live)
    per_machine: dict[str, int] = {}
    for _, machine in entries:
        per_machine[machine] = per_machine.get(machine, 0) + 1
    assert set(per_machine.values()) == {10}


def test_a_mass_disappearance_holds_units_in_place():
    from provisioner.scheduler.engine import machines_to_hold

    seen = {"m1": 100.0, "m2": 100.0, "m3": 100.0, "m4": 100.0}
    # One machine of four gone: an ordinary failure, nothing held.
    assert machines_to_hold(frozenset({"m1", "m2", "m3"}), seen, 102.0, 5.0) == frozenset()
    # Three of four gone at once: held, for up to three TTLs.
    held = machines_to_hold(frozenset({"m1"}), seen, 102.0, 5.0)
    assert held == {"m2", "m3", "m4"}
    assert machines_to_hold(frozenset({"m1"}), seen, 116.0, 5.0) == frozenset()
    live = machines("m1")
    schedule = [Assignment("web.service", "m2", "h", LAUNCHED), Assignment("db.service", "m3", "h", LAUNCHED)]
    jobs = {j.name: j for j in [job("web.service"), job("db.service")]}
    assert decide(ClusterSnapshot(jobs, live, tuple(schedule)), held) == []
    moved = decide(ClusterSnapshot(jobs, live, tuple(schedule)))
    assert {a.assignment.machine for a in moved if isinstance(a, Put)} == {"m1"}
