"""kup_handover: wait, on the controller, until a kup apply started on a host has handed over to the new kernel.

Why an action plugin: the kexec ends the host's SSH server and the connection with it, and only code on the controller
can keep looking across that gap. A task on the host would die with the connection, and Ansible's `until` does not
retry an unreachable host; `wait_for_connection` alone cannot tell the old kernel, still shutting down, from the new
one. So this plugin looks at the host every `delay` seconds, reconnecting after every failure, and returns once

- the host runs another boot than `boot_id` (the kexec happened: kup plan resume takes over there), or
- the apply that started after `previous_journal` ended on this kernel (rolled back, or failed before the kexec);

it fails when the apply ended without journaling anything (kup refused: another apply pending, not root, ...) or
after `timeout` seconds. The decision is the pure function `decide`, unit-tested in contrib/ansible/tests/.
"""

from __future__ import annotations

import json
import shlex
import time

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

# The states of `kup plan status` after which nothing more happens by itself (docs/executor.md).
TERMINAL = ("completed", "failed", "rolled-back")

_BOOT, _JOB, _STATUS = "==kup-boot==", "==kup-job==", "==kup-status=="


def probe_command(job_file: str, kup: str, journal: str) -> str:
    """The one command each look runs on the host: its boot id, the async job's result file, kup plan status."""
    q = shlex.quote
    return (
        f"echo {_BOOT}; cat /proc/sys/kernel/random/boot_id; "
        f"echo {_JOB}; cat {q(job_file)} 2>/dev/null; echo; "
        f"echo {_STATUS}; {q(kup)} plan status --format json --journal {q(journal)} 2>/dev/null; true"
    )


def parse_probe(stdout: str) -> dict:
    """The probe's output as {"boot_id", "job", "status"} (job and status are None when absent or not JSON)."""
    sections = {_BOOT: [], _JOB: [], _STATUS: []}
    current = None
    for line in stdout.splitlines():
        if line.strip() in sections:
            current = line.strip()
        elif current is not None:
            sections[current].append(line)

    def as_json(lines):
        text = "\n".join(lines).strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    return {
        "boot_id": "\n".join(sections[_BOOT]).strip(),
        "job": as_json(sections[_JOB]),
        "status": as_json(sections[_STATUS]),
    }


def decide(boot_id: str, previous_journal: str, sample: dict) -> tuple[str, str]:
    """What one look at the host means: ("handed-over" | "ended" | "refused" | "wait", why)."""
    if not sample["boot_id"]:
        return "wait", "the host did not say which boot it runs"
    if sample["boot_id"] != boot_id:
        return "handed-over", f"the host runs a new boot ({sample['boot_id']})"
    status = sample["status"]
    ours = status is not None and status.get("journal") not in (None, "", previous_journal)
    if ours and status.get("state") in TERMINAL:
        return "ended", f"the apply ended on this kernel: {status.get('state')}"
    job = sample["job"]
    if job is not None and job.get("finished") and not ours:
        rc = job.get("rc")
        output = (job.get("stderr") or job.get("stdout") or job.get("msg") or "").strip()
        return "refused", f"kup plan apply exited {rc} without journaling an apply: {output}"
    if ours:
        return "wait", f"the apply is {status.get('state')}"
    return "wait", "the apply has not journaled anything yet"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("boot_id", "previous_journal", "job_file", "kup", "journal", "timeout", "delay"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        missing = [name for name in ("boot_id", "job_file", "kup", "journal") if not args.get(name)]
        if missing:
            return {**result, "failed": True, "msg": f"kup_handover needs {', '.join(missing)}"}
        boot_id = str(args["boot_id"]).strip()
        previous = str(args.get("previous_journal") or "").strip()
        timeout = int(args.get("timeout", 900))
        delay = max(1, int(args.get("delay", 5)))
        command = probe_command(str(args["job_file"]), str(args["kup"]), str(args["journal"]))

        started = time.monotonic()
        deadline = started + timeout
        looks = unreachable_looks = 0
        why = "no look at the host yet"
        while True:
            looks += 1
            try:
                out = self._low_level_execute_command(command, sudoable=True)
                sample = parse_probe(out.get("stdout", ""))
                verdict, why = decide(boot_id, previous, sample)
            except AnsibleConnectionFailure as error:
                # Expected while the old kernel shuts down and the new one boots: drop the (dead) persistent
                # connection so that the next look opens a fresh one.
                unreachable_looks += 1
                verdict, why = "wait", f"unreachable: {str(error).strip()[:200]}"
                try:
                    self._connection.reset()
                except Exception:  # noqa: BLE001 - a connection that cannot even reset is retried as well
                    pass
            if verdict != "wait":
                break
            if time.monotonic() + delay > deadline:
                return {
                    **result,
                    "failed": True,
                    "msg": f"no hand-over within {timeout} s: {why}",
                    "looks": looks,
                    "unreachable_looks": unreachable_looks,
                }
            time.sleep(delay)

        result.update(
            {
                "changed": False,
                "failed": verdict == "refused",
                "handed_over": verdict == "handed-over",
                "verdict": verdict,
                "msg": why,
                "looks": looks,
                "unreachable_looks": unreachable_looks,
                "waited_s": round(time.monotonic() - started, 1),
            }
        )
        return result
