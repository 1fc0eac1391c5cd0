"""The systemctl stand-in of the test hosts reads unit files as systemd does: drop-ins, environment, commands."""

from simcluster.hosts import systemctl

UNIT = """\
[Unit]
Description=Configure MIG
After=a.service b.service

[Service]
Type=oneshot
Environment="MIG_PARTED_SELECTED_CONFIG=all-disabled"
EnvironmentFile=-/nonexistent/file
ExecStart=/bin/bash /etc/x/service.sh $OPTS ${ONE}
ExecStart=-/bin/true \\
  continued

[Install]
WantedBy=multi-user.target
"""


def test_unit_with_drop_in_environment_and_commands(tmp_path, monkeypatch):
    system = tmp_path / "system"
    (system / "x.service.d").mkdir(parents=True)
    (system / "x.service").write_text(UNIT)
    (system / "x.service.d" / "override.conf").write_text(
        '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-1g.10gb"\nEnvironment=OPTS="-a -b" ONE=1\n')
    monkeypatch.setattr(systemctl, "UNIT_DIRS", (str(system),))
    unit = systemctl.Unit("x")
    assert unit.name == "x.service" and unit.kind == "oneshot"
    env = unit.environment()
    assert env["MIG_PARTED_SELECTED_CONFIG"] == "all-1g.10gb"  # the drop-in wins
    commands = unit.commands("ExecStart", env)
    assert commands == [(["/bin/bash", "/etc/x/service.sh", "-a", "-b", "1"], False), (["/bin/true", "continued"], True)]
    assert unit.wanted_by() == ["multi-user.target"]
    assert unit.file_state() == "disabled"
    (system / "multi-user.target.wants").mkdir()
    (system / "multi-user.target.wants" / "x.service").symlink_to(system / "x.service")
    assert unit.file_state() == "enabled"


def test_an_empty_exec_assignment_resets_the_list():
    parsed: dict = {}
    systemctl._parse("[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n", parsed)
    assert parsed["Service"]["ExecStart"] == ["/bin/b"]
