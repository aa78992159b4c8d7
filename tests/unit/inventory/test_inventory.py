"""Inventory loading (every rejection is one line naming file and line/field) and matching."""


import pytest

from provisioner.errors import ConfigError
from provisioner.inventory import MachineQuery, Selection, load_inventory, normalize_mac
from provisioner.render.check import check_inventory
from tests.fixtures.files import write


@pytest.fixture
def data_dir(tmp_path):
    write(tmp_path, "profiles/p.yaml", "id: p\nboot:\n  kernel: /k\n  args: [a=1]\ncloud_id: c.yaml.j2\n")
    write(tmp_path, "cloud/c.yaml.j2", "#cloud-config\nhostname: {{ hostname }}\n")
    return tmp_path


@pytest.mark.parametrize("spelling", ["52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef", "5254.00ab.cdef", "525400abcdef"])
def test_mac_spellings_normalise(spelling):
    assert normalize_mac(spelling) == "52:54:00:ab:cd:ef"


def test_most_specific_group_wins_and_ties_are_deterministic(data_dir):
    write(data_dir, "groups/default.yaml", "id: default\nprofile: p\nmetadata: {hostname: d}\n")
    write(data_dir, "groups/mac.yaml", "id: mac\nprofile: p\nselector: {mac: '52:54:00:00:00:01'}\n")
    write(data_dir, "groups/mac-installed.json",
          '{"id": "mac-installed", "profile": "p", "selector": {"mac": "52-54-00-00-00-01", "os": "installed"}}')
    write(data_dir, "groups/b.yaml", "id: b\nprofile: p\nselector: {region: x}\n")
    write(data_dir, "groups/a.yaml", "id: a\nprofile: p\nselector: {region: x}\n")
    inventory = load_inventory(data_dir)
    match = lambda **kw: inventory.match(MachineQuery(**kw)).group.id  # noqa: E731
    assert match(mac="52:54:00:00:00:01") == "mac"
    assert match(mac="5254.0000.0001", labels={"os": "installed"}) == "mac-installed"
    assert match(mac="52:54:00:00:00:99") == "default"
    assert match(labels={"region": "x"}) == "a"  # identical selectors: smallest id, every time
    problems = [str(p) for p in check_inventory(inventory)]
    assert any("identical selector region=x" in p for p in problems)


def test_require_boot_secret_on_a_group_or_its_profile_gates_the_selection(data_dir):
    write(data_dir, "profiles/open.yaml", "id: open\n")
    write(data_dir, "profiles/gated.yaml", "id: gated\nrequire_boot_secret: true\n")
    write(data_dir, "groups/a.yaml", "id: a\nprofile: open\nselector: {mac: '52:54:00:00:00:01'}\n")
    write(data_dir, "groups/b.yaml", "id: b\nprofile: open\nrequire_boot_secret: true\nselector: {mac: '52:54:00:00:00:02'}\n")
    write(data_dir, "groups/c.yaml", "id: c\nprofile: gated\nselector: {mac: '52:54:00:00:00:03'}\n")
    inventory = load_inventory(data_dir)
    gated = {}
    for mac in ("52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"):
        match = inventory.match(MachineQuery(mac=mac))
        assert match is not None and match.profile is not None
        gated[mac[-1]] = Selection(match.group, match.profile).requires_boot_secret
    assert gated == {"1": False, "2": True, "3": True}


def test_no_match_without_default(data_dir):
    write(data_dir, "groups/mac.yaml", "id: mac\nprofile: p\nselector: {mac: '52:54:00:00:00:01'}\n")
    assert load_inventory(data_dir).match(MachineQuery(mac="52:54:00:00:00:02")) is None


@pytest.mark.parametrize("name, text, expected", [
    ("groups/g.yaml", "id: g\nprofile: p\nselector:\n  mac: [oops\n", "groups/g.yaml:5: invalid YAML"),
    ("groups/g.json", '{"id": "g",\n "profile": }', "groups/g.json:2: invalid JSON"),
    ("groups/g.yaml", "id: g\nprofile: p\nselector: {mac: 'zz:00:00:00:00:01'}\n",
     "groups/g.yaml: selector.mac: 'zz:00:00:00:00:01' is not a MAC address"),
    ("groups/g.yaml", "id: g\nprofile: p\nselector: {mac_address: '52:54:00:00:00:01'}\n",
     "groups/g.yaml: selector.mac_address: unknown selector key 'mac_address' (did you mean 'mac'?)"),
    ("groups/g.yaml", "id: g\nprofile: p\nselector: {hostnme: a}\n", "unknown selector key 'hostnme' (did you mean 'hostname'?)"),
    ("groups/g.yaml", "id: g\nprofile: p\nselectors: {os: a}\n", "groups/g.yaml: unknown key 'selectors' (did you mean 'selector'?)"),
    ("groups/g.yaml", "id: g\nselector: {os: a}\n", "groups/g.yaml: profile: missing (required)"),
    ("profiles/q.yaml", "id: q\nboot: {kernel: /k, args: 'a b'}\n", "profiles/q.yaml: boot.args: want a list of strings"),
    ("profiles/q.json", '{"id": "q", "cmdline": {}}', "matchbox removed 'cmdline' in v0.7"),
    ("profiles/q.yaml", "id: q\nrequire_boot_secret: 'yes'\n", "profiles/q.yaml: require_boot_secret: want true or false"),
    ("groups/g.yaml", "id: g\nprofile: p\nrequire_boot_secret: 1\n", "groups/g.yaml: require_boot_secret: want true or false"),
])
def test_bad_input_is_one_line_naming_file_and_line_or_field(data_dir, name, text, expected):
    write(data_dir, name, text)
    with pytest.raises(ConfigError) as info:
        load_inventory(data_dir)
    message = str(info.value)
    assert expected in message and "\n" not in message
