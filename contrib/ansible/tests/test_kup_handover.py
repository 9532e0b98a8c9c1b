"""Unit tests of the kup_handover action's decision (no host: the probe's output is given as text).

Run with the Python that has ansible-core: `python -m unittest discover -s contrib/ansible/tests`
(tests/lab_fleet.rs runs them with the lab's venv).
"""

import json
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "roles" / "kup" / "action_plugins"))

import kup_handover  # noqa: E402

BOOT = "0b3c5a36-1111-4e0c-9d2b-000000000001"
NEW_BOOT = "0b3c5a36-2222-4e0c-9d2b-000000000002"
OLD_APPLY = "/var/lib/kup/2026-12-01T10:00:00Z-100"
THIS_APPLY = "/var/lib/kup/2026-12-01T12:00:00Z-200"


def probe(boot=BOOT, job=None, status=None):
    """The probe's stdout as the host prints it."""
    lines = ["==kup-boot==", boot, "==kup-job=="]
    if job is not None:
        lines.append(json.dumps(job))
    lines += ["", "==kup-status=="]
    if status is not None:
        lines += json.dumps(status, indent=2).splitlines()
    return "\n".join(lines) + "\n"


def decide(text, previous=OLD_APPLY):
    return kup_handover.decide(BOOT, previous, kup_handover.parse_probe(text))[0]


class ParseProbe(unittest.TestCase):
    def test_reads_the_three_sections(self):
        sample = kup_handover.parse_probe(
            probe(job={"started": 1, "finished": 0}, status={"journal": THIS_APPLY, "state": "running"})
        )
        self.assertEqual(sample["boot_id"], BOOT)
        self.assertEqual(sample["job"], {"started": 1, "finished": 0})
        self.assertEqual(sample["status"]["state"], "running")

    def test_missing_or_broken_sections_are_none(self):
        sample = kup_handover.parse_probe("==kup-boot==\n" + BOOT + "\n==kup-job==\n{not json\n==kup-status==\n")
        self.assertEqual(sample["job"], None)
        self.assertEqual(sample["status"], None)
        self.assertEqual(kup_handover.parse_probe("")["boot_id"], "")


class Decide(unittest.TestCase):
    def test_a_new_boot_is_the_hand_over_whatever_the_journal_says(self):
        self.assertEqual(decide(probe(boot=NEW_BOOT, status={"journal": THIS_APPLY, "state": "running"})), "handed-over")
        self.assertEqual(decide(probe(boot=NEW_BOOT)), "handed-over")

    def test_an_apply_still_running_on_the_old_kernel_is_waited_for(self):
        self.assertEqual(decide(probe(status={"journal": THIS_APPLY, "state": "running"})), "wait")

    def test_kup_killed_by_the_kexec_shutdown_is_not_an_end(self):
        # The shutdown stops kup after its kexec record: the job may say finished, the journal still says running.
        job = {"finished": 1, "failed": 1, "rc": -15}
        self.assertEqual(decide(probe(job=job, status={"journal": THIS_APPLY, "state": "running"})), "wait")

    def test_a_rollback_on_the_old_kernel_ends_the_wait(self):
        for state in ("rolled-back", "failed", "completed"):
            status = {"journal": THIS_APPLY, "state": state}
            self.assertEqual(decide(probe(job={"finished": 1, "rc": 5}, status=status)), "ended", state)

    def test_the_previous_apply_ended_long_ago_is_not_this_one(self):
        self.assertEqual(decide(probe(status={"journal": OLD_APPLY, "state": "rolled-back"})), "wait")
        self.assertEqual(decide(probe(status={"journal": OLD_APPLY, "state": "completed"})), "wait")

    def test_kup_exiting_without_a_journal_is_a_refusal(self):
        job = {"finished": 1, "rc": 3, "stderr": "kup: error: an earlier apply is still pending"}
        self.assertEqual(decide(probe(job=job, status={"journal": OLD_APPLY, "state": "completed"})), "refused")
        verdict, why = kup_handover.decide(BOOT, "", kup_handover.parse_probe(probe(job=job)))
        self.assertEqual(verdict, "refused")
        self.assertIn("still pending", why)

    def test_nothing_journaled_yet_is_waited_for(self):
        self.assertEqual(decide(probe(job={"started": 1, "finished": 0})), "wait", "first apply on this host")
        self.assertEqual(decide(probe(), previous=""), "wait")

    def test_no_boot_id_is_no_answer(self):
        self.assertEqual(decide("==kup-boot==\n\n==kup-status==\n"), "wait")


class ProbeCommand(unittest.TestCase):
    def test_quotes_its_arguments(self):
        command = kup_handover.probe_command("/root/.ansible_async/j1 x", "/usr/local/bin/kup", "/var/lib/kup")
        self.assertIn("'/root/.ansible_async/j1 x'", command)
        self.assertIn("plan status --format json --journal /var/lib/kup", command)


if __name__ == "__main__":
    unittest.main()
