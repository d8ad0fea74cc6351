"""SIGHUP reload, start-up checks (run and check-config --strict) and relative paths,
against the real service as a subprocess and a real receiver on 127.0.0.1."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.helpers.alert_ops import (
    append_lines,
    cli,
    cli_json,
    receiver,
    result_line,
    service,
    write_config,
)

IOC_RULE = """
  - name: ioc
    notify: [hook]
    remote_address: {include_files: [ioc.txt]}
"""


def ioc_line(n: int, remote: str) -> str:
    return result_line(n).replace('"198.51.100.7"', f'"{remote}"').replace('"4444"', '"443"')


def test_sighup_applies_a_valid_config_without_losing_queued_alerts(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.base + "/down")
        (tmp_path / "ioc.txt").write_text("203.0.113.0/24\n", encoding="utf-8")
        log = tmp_path / "results.log"
        with service(config, tmp_path / "run.log") as svc:
            append_lines(log, [result_line(n) for n in range(5)])
            svc.wait_event("notify_retrying")
            queued = cli_json("outbox", "list", "--state", "pending", "--config", str(config))
            assert len(queued) == 5

            write_config(tmp_path, rx.url, extra=IOC_RULE)  # relative IOC path
            text = config.read_text(encoding="utf-8")
            config.write_text(text.replace("log_level: info", "log_level: debug"), "utf-8")
            assert not [e for e in svc.events() if e["level"] == "debug"]
            svc.signal(signal.SIGHUP)
            (reloaded,) = svc.wait_event("config_reloaded")
            assert reloaded["rules"] == 2
            svc.wait_event("notify_sent", 5)
            assert set(rx.accepted_ids()) == {row["alert_id"] for row in queued}

            append_lines(log, [ioc_line(10, "203.0.113.9"), ioc_line(11, "192.0.2.77")])
            svc.wait_event("notify_sent", 6)
            assert svc.wait_event("batch_committed")[0]["level"] == "debug"  # log_level applied
            # The IOC list is re-read on SIGHUP too.
            (tmp_path / "ioc.txt").write_text("192.0.2.0/24\n", encoding="utf-8")
            svc.signal(signal.SIGHUP)
            svc.wait_event("config_reloaded", 2)
            append_lines(log, [ioc_line(12, "192.0.2.78"), ioc_line(13, "203.0.113.10")])
            svc.wait_event("notify_sent", 7)
            assert svc.proc.poll() is None
        remotes = [
            h.body["connection"]["remote_address"]
            for h in rx.hits
            if h.status == 200 and h.body["rule"] == "ioc"
        ]
        assert remotes == ["203.0.113.9", "192.0.2.78"]
        assert sorted(rx.accepted_ids().values()) == [1] * 7


def test_sighup_with_an_invalid_config_keeps_the_running_one_and_logs_every_problem(
    tmp_path: Path,
) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        good = config.read_text(encoding="utf-8")
        log = tmp_path / "results.log"
        with service(config, tmp_path / "run.log") as svc:
            config.write_text(
                good.replace("notify: [hook]", "notify: [pager]").replace(
                    "remote_port: [4444]", "remote_port: [70000]"
                ),
                encoding="utf-8",
            )
            svc.signal(signal.SIGHUP)
            (failed,) = svc.wait_event("config_reload_failed")
            assert failed["level"] == "error"
            problems = "\n".join(failed["problems"])
            assert "$.rules[0].notify[0]: no notifier named 'pager'" in problems
            assert "$.rules[0].remote_port[0]" in problems
            append_lines(log, [result_line(1)])
            svc.wait_event("notify_sent")
            assert svc.proc.poll() is None
            assert not [e for e in svc.events() if e.get("event") == "config_reloaded"]
        assert len(rx.accepted_ids()) == 1


def test_check_config_strict_checks_the_host(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        state_file = tmp_path / "not-a-dir"
        state_file.write_text("", encoding="utf-8")
        config = write_config(
            tmp_path,
            "http://127.0.0.1:9/hook",
            log=tmp_path / "nowhere" / "results.log",
            extra=f"metrics: {{listen_address: 127.0.0.1, port: {port}}}\n"
            f"state_dir: {state_file}\n",
        )
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace(f"state_dir: {tmp_path / 'state'}\n", "", 1), encoding="utf-8"
        )
        plain = cli("check-config", str(config))
        assert (plain.returncode, plain.stdout) == (0, "OK\n"), plain.stderr
        strict = cli("check-config", "--strict", str(config))
        assert strict.returncode == 1
        lines = strict.stderr.splitlines()
        assert lines == [
            f"{config}: $.state_dir: {state_file} is not a directory",
            f"{config}: $.sources[0].path: {tmp_path / 'nowhere' / 'results.log'}: neither"
            f" the file nor its directory {tmp_path / 'nowhere'} exists",
            f"{config}: $.metrics.port: 127.0.0.1:{port} is in use by another process",
        ]
        run = cli("run", "--config", str(config))
        assert run.returncode == 1
        assert lines[0] in run.stderr and lines[1] in run.stderr
    finally:
        busy.close()


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    with receiver() as rx:
        folder = tmp_path / "etc"
        folder.mkdir()
        config = folder / "alerts.yaml"
        write_config(folder, rx.url)
        config.write_text(
            config.read_text(encoding="utf-8")
            .replace(f"state_dir: {folder / 'state'}", "state_dir: ../var/state")
            .replace(f"path: {folder / 'results.log'}", "path: logs/results.log"),
            encoding="utf-8",
        )
        (folder / "logs").mkdir()
        append_lines(folder / "logs" / "results.log", [result_line(1)])
        # Started from another working directory (the repository root).
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_sent")
            (started,) = svc.wait_event("service_started")
        assert started["state"] == str(tmp_path / "var" / "state" / "state.sqlite3")
        assert started["sources"] == [str(folder / "logs" / "results.log")]
        assert (tmp_path / "var" / "state" / "run.lock").exists()
        strict = cli("check-config", "--strict", str(config))
        assert (strict.returncode, strict.stdout) == (0, "OK\n"), strict.stderr


def test_check_config_strict_refuses_a_state_dir_that_cannot_be_created(tmp_path: Path) -> None:
    """os.access says yes to root everywhere: the check must try, not ask."""
    a_file = tmp_path / "hostname"
    a_file.write_text("", encoding="utf-8")
    for state_dir, why in (
        (a_file / "state", f"{a_file} is not a directory"),
        (Path("/proc/tracked-connections-nope/state"), "cannot be created in /proc"),
    ):
        config = write_config(tmp_path, "http://127.0.0.1:9/hook")
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace(f"state_dir: {tmp_path / 'state'}\n", f"state_dir: {state_dir}\n", 1),
            encoding="utf-8",
        )
        strict = cli("check-config", "--strict", str(config))
        assert strict.returncode == 1, strict.stdout
        assert why in strict.stderr, strict.stderr


def test_the_state_directory_and_lock_are_private(tmp_path: Path) -> None:
    from alert_service.state.lock import LOCK_FILE, acquire_instance_lock  # noqa: PLC0415

    state = tmp_path / "deep" / "state"
    lock = acquire_instance_lock(state)
    try:
        assert state.stat().st_mode & 0o777 == 0o700
        assert (state / LOCK_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        lock.release()


def test_check_config_takes_the_config_from_the_environment(tmp_path: Path) -> None:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.helpers.alert_ops import REPO_ROOT, env  # noqa: PLC0415

    config = write_config(tmp_path, "http://127.0.0.1:9/hook")
    environ = {**env(), "TRACKED_CONNECTIONS_ALERTS_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "alert_service", "check-config"],
        cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "OK\n"), done.stderr
    assert os.environ.get("TRACKED_CONNECTIONS_ALERTS_CONFIG") is None
