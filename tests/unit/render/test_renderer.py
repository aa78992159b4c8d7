"""Rendering: matchbox-style iPXE scripts, validated cloud-configs, metadata, strict templates."""

from pathlib import Path

import pytest

from provisioner.errors import TemplateError, ValidationError
from provisioner.inventory import MachineQuery, load_inventory
from provisioner.render import NoMatch, Renderer
from provisioner.render.check import check_inventory
from provisioner.render.gotemplate import translate_go_template
from provisioner.render.renderer import initrd_name
from tests.fixtures.files import write

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"


@pytest.fixture
def renderer(tmp_path):
    write(tmp_path, "profiles/p.yaml", "id: p\nboot:\n  kernel: /assets/k\n  initrd: [/assets/i1, /assets/i2]\n"
          "  args: [initrd=i1, 'url={{ server_url }}/cloud-config?mac=${mac:hexhyp}']\ncloud_id: c.yaml.j2\n")
    write(tmp_path, "cloud/c.yaml.j2", "#cloud-config\nhostname: {{ hostname }}\n{% if bad %}coreos:\n  units:\n"
          "    - command: explode\n{% endif %}")
    write(tmp_path, "groups/g.yaml", "id: g\nprofile: p\nselector: {mac: '52:54:00:00:00:01'}\nmetadata: {hostname: n1, bad: false}\n")
    write(tmp_path, "groups/bad.yaml", "id: bad\nprofile: p\nselector: {os: bad}\nmetadata: {hostname: n2, bad: true}\n")
    return Renderer(load_inventory(tmp_path), server_url="http://10.0.0.1:8080/")


def test_ipxe_script_is_matchbox_shaped_with_expanded_server_url(renderer):
    script = renderer.ipxe(MachineQuery(mac="52:54:00:00:00:01"))
    # matchbox's shape, plus initrd=i2 for the initrd the args did not name (UEFI needs it)
    assert script == ("#!ipxe\nkernel /assets/k initrd=i1 url=http://10.0.0.1:8080/cloud-config?mac=${mac:hexhyp} "
                      "initrd=i2\ninitrd /assets/i1\ninitrd /assets/i2\nboot\n")


def test_cloud_config_is_rendered_and_validated(renderer):
    assert renderer.cloud_config(MachineQuery(mac="52:54:00:00:00:01")) == "#cloud-config\nhostname: n1\n"
    with pytest.raises(ValidationError, match=r"cloud/c.yaml.j2 rendered for group bad: line 5: error: invalid value explode"):
        renderer.cloud_config(MachineQuery(labels={"os": "bad"}))


def test_unknown_machine_raises_no_match(renderer):
    with pytest.raises(NoMatch, match="no group matches mac=52:54:00:00:00:09"):
        renderer.ipxe(MachineQuery(mac="52:54:00:00:00:09"))


def test_metadata_is_an_env_file(renderer):
    text = renderer.metadata(MachineQuery(mac="52:54:00:00:00:01", raw_query="mac=52:54:00:00:00:01"))
    assert "HOSTNAME=n1\n" in text and "MAC=52:54:00:00:00:01\n" in text
    assert "REQUEST_QUERY_MAC=52:54:00:00:00:01\n" in text and "REQUEST_RAW_QUERY=mac=52:54:00:00:00:01\n" in text


def test_undefined_variable_names_template_line_and_variable(tmp_path):
    write(tmp_path, "profiles/p.yaml", "id: p\ncloud_id: c.yaml.j2\n")
    write(tmp_path, "cloud/c.yaml.j2", "#cloud-config\n\n\nhostname: {{ etcd_name }}\n")
    write(tmp_path, "groups/g.yaml", "id: g\nprofile: p\n")
    with pytest.raises(TemplateError) as info:
        Renderer(load_inventory(tmp_path)).cloud_config(MachineQuery())
    assert str(info.value) == "cloud/c.yaml.j2:4: undefined variable 'etcd_name' (rendering group g)"


def test_go_templates_translate_with_lines_kept():
    source = ('a: {{.name}}\n{{ if index . "keys" }}keys:\n{{ range $k := .keys }}  - {{$k}}\n{{end}}{{end}}'
              'n: {{len .keys}}\n{{/* comment */}}x')
    jinja = translate_go_template(source, "t")
    assert jinja.count("\n") == source.count("\n")
    from provisioner.render.templates import make_environment
    out = make_environment().from_string(jinja).render(name="n", keys=["k1", "k2"])
    assert out == "a: n\nkeys:\n  - k1\n  - k2\nn: 2\nx"


def test_unsupported_go_action_is_refused_with_line():
    with pytest.raises(TemplateError, match=r"^t:2: Go template action 'with' is not supported"):
        translate_go_template("a\n{{with .x}}{{end}}", "t")


def test_examples_cluster_every_machine_renders():
    renderer = Renderer(load_inventory(EXAMPLES), server_url="http://10.99.0.1:8080")
    for n in (1, 2, 3):
        mac = f"52:54:00:00:00:0{n}"
        assert "provisioner_production_pxe.vmlinuz" in renderer.ipxe(MachineQuery(mac=mac))
        installed = renderer.cloud_config(MachineQuery(mac=mac, labels={"os": "installed"}))
        assert f"hostname: node{n}\n" in installed
        assert ("initial-cluster: node1=http://10.99.0.11:2380,node2=http://10.99.0.12:2380,"
                "node3=http://10.99.0.13:2380\n") in installed
        assert renderer.ipxe(MachineQuery(mac=mac, labels={"os": "installed"})).endswith("exit 1\n")


@pytest.mark.parametrize(("entry", "name"), [
    ("/assets/release/current/initrd.cpio.gz", "initrd.cpio.gz"),
    ("http://10.0.0.1:8080/assets/x/image.cpio.gz?mac=52-54-00-00-00-01", "image.cpio.gz"),
    ("--name main /assets/x/image.cpio.gz", "main"),
    ("-n main http://h/a.img", "main"),
])
def test_initrd_name_is_the_one_ipxe_gives_the_image(entry, name):
    assert initrd_name(entry) == name


def test_uefi_initrd_argument_added_only_when_missing(tmp_path):
    write(tmp_path, "profiles/p.yaml", "id: p\nboot:\n  kernel: /assets/vmlinuz\n"
          "  initrd: [/assets/a.cpio.gz, /assets/b.cpio.gz]\n  args: [console=ttyS0, initrd=a.cpio.gz]\n")
    write(tmp_path, "groups/g.yaml", "id: g\nprofile: p\n")
    renderer = Renderer(load_inventory(tmp_path), server_url="http://s")
    script = renderer.ipxe(MachineQuery(mac="52:54:00:00:00:01"))
    assert script.splitlines() == [
        "#!ipxe",
        "kernel /assets/vmlinuz console=ttyS0 initrd=a.cpio.gz initrd=b.cpio.gz",
        "initrd /assets/a.cpio.gz",
        "initrd /assets/b.cpio.gz",
        "boot",
    ]
    problems = [str(p) for p in check_inventory(load_inventory(tmp_path))]
    assert problems == ["warning: profiles/p.yaml:5: profile 'p': boot.args lacks initrd=b.cpio.gz; the server adds it, "
                        "since UEFI machines find no initrd without it (Linux's EFI stub reads it)"]


def test_cluster_members_are_the_groups_sharing_the_token(tmp_path):
    from provisioner.render.cluster import cluster_members

    groups = load_inventory(EXAMPLES).groups
    members = cluster_members(groups, "cluster-1")
    assert [(m["id"], m["hostname"], m["ip"]) for m in members] == [
        ("node1", "node1", "10.99.0.11"), ("node2", "node2", "10.99.0.12"), ("node3", "node3", "10.99.0.13")]
    assert cluster_members(groups, "other") == []


def test_a_member_without_the_key_a_template_needs_is_a_template_error(tmp_path):
    import shutil

    shutil.copytree(EXAMPLES, tmp_path / "data")
    group = tmp_path / "data" / "groups" / "node3.yaml"
    group.write_text(group.read_text().replace("  ip: 10.99.0.13", "  address: 10.99.0.13"))
    renderer = Renderer(load_inventory(tmp_path / "data"), server_url="http://10.99.0.1:8080")
    with pytest.raises(TemplateError, match=r"^cloud/node.yaml.j2:\d+: undefined variable.*'ip'"):
        renderer.cloud_config(MachineQuery(mac="52:54:00:00:00:01", labels={"os": "installed"}))
