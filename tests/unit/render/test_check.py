"""`inventory check`: every problem a boot would hit, with file and line."""

from provisioner.inventory import load_inventory
from provisioner.render.check import check_inventory
from tests.fixtures.files import write


def test_check_reports_missing_profile_missing_template_and_render_failures(tmp_path):
    write(tmp_path, "profiles/p.yaml", "id: p\nboot:\n  kernel: /k\n  args: [a=1]\ncloud_id: c.yaml.j2\n")
    write(tmp_path, "cloud/c.yaml.j2", "#cloud-config\nhostname: {{ hostname }}\n")
    write(tmp_path, "profiles/broken.yaml", "id: broken\ncloud_id: missing.yaml.j2\n")
    write(tmp_path, "profiles/undefined.yaml", "id: undefined\ncloud_id: u.yaml.j2\n")
    write(tmp_path, "cloud/u.yaml.j2", "#cloud-config\n\nhostname: {{ no_such_var }}\n")
    write(tmp_path, "groups/g1.yaml", "id: g1\nprofile: nope\nselector: {os: a}\n")
    write(tmp_path, "groups/g2.yaml", "id: g2\nprofile: broken\nselector: {os: b}\n")
    write(tmp_path, "groups/g3.yaml", "id: g3\nprofile: undefined\nselector: {os: c}\n")
    write(tmp_path, "groups/g4.yaml", "id: g4\nprofile: p\nselector: {os: d}\nmetadata: {hostname: ok}\n")
    problems = [str(p) for p in check_inventory(load_inventory(tmp_path))]
    assert "error: groups/g1.yaml:2: group 'g1' names profile 'nope', which does not exist (profiles: broken, p, undefined)" in problems
    assert "error: profiles/broken.yaml:2: profile 'broken': cloud_id names cloud/missing.yaml.j2, which does not exist" in problems
    assert "error: cloud/u.yaml.j2:3: undefined variable 'no_such_var' (rendering group g3) [group g3]" in problems
    assert not any("g4" in p for p in problems)
