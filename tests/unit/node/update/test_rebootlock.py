"""locksmith's semaphore arithmetic and JSON (pure)."""

from __future__ import annotations

import pytest

from provisioner.node.update.rebootlock import HolderExists, LockError, NotHolder, Semaphore, semaphore_key


def test_keys_are_locksmiths():
    assert semaphore_key() == "coreos.com/updateengine/rebootlock/semaphore"
    assert semaphore_key("rack 1/a&b") == "coreos.com/updateengine/rebootlock/groups/rack+1%2Fa%26b/semaphore"


def test_json_round_trip_and_locksmiths_null_holders():
    assert Semaphore().to_json() == '{"semaphore":1,"max":1,"holders":[]}'
    assert Semaphore.parse('{"semaphore":1,"max":1,"holders":null}', "k") == Semaphore()
    value = Semaphore(0, 2, ("a", "b"))
    assert Semaphore.parse(value.to_json(), "k") == value


@pytest.mark.parametrize("text", ["", "[]", '{"semaphore":"1","max":1}', '{"max":1}',
                                  '{"semaphore":1,"max":1,"holders":[1]}'])
def test_bad_values_name_the_key(text):
    with pytest.raises(LockError, match="^etcd key the/key: not a locksmith semaphore"):
        Semaphore.parse(text, "the/key")


def test_lock_and_unlock():
    locked = Semaphore(2, 2).lock("m2").lock("m1")
    assert locked == Semaphore(0, 2, ("m1", "m2"))   # sorted, as locksmith inserts
    with pytest.raises(LockError, match="^semaphore is at 0$"):
        locked.lock("m3")
    assert locked.unlock("m2") == Semaphore(1, 2, ("m1",))
    with pytest.raises(NotHolder, match="holder does not exist"):
        locked.unlock("m3")


def test_a_holder_is_told_so_even_when_no_slot_is_free():
    with pytest.raises(HolderExists, match="holder exists"):
        Semaphore(0, 1, ("m1",)).lock("m1")


def test_set_max_shifts_the_free_count():
    held = Semaphore(0, 2, ("a", "b"))
    assert held.set_max(1) == Semaphore(-1, 1, ("a", "b"))
    assert held.set_max(1).set_max(3) == Semaphore(1, 3, ("a", "b"))
    assert held.set_max(1).unlock("a") == Semaphore(0, 1, ("b",))
