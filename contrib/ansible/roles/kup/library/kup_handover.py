#!/usr/bin/python
"""The documentation of the kup_handover action (action_plugins/kup_handover.py does the work, on the controller)."""

DOCUMENTATION = r"""
---
module: kup_handover
short_description: Wait until a detached kup plan apply has handed over to the new kernel
description:
  - Runs on the controller. Looks at the host every O(delay) seconds (its boot id, the async job's result file,
    C(kup plan status --format json)), reconnecting whenever the kexec has cut the connection, and returns once the
    host runs another boot than O(boot_id), or once the apply journaled after O(previous_journal) ended on the old
    kernel (rolled back or failed before the kexec).
  - Fails when kup exited without journaling an apply (it refused), or after O(timeout) seconds.
options:
  boot_id:
    description: The host's boot id before the apply started.
    type: str
    required: true
  previous_journal:
    description: The journal directory of the latest apply before this one (C(kup plan status)'s C(journal)), if any.
    type: str
    default: ""
  job_file:
    description: The results_file of the async task that started C(kup plan apply).
    type: str
    required: true
  kup:
    description: The kup binary on the host.
    type: str
    required: true
  journal:
    description: The journal root (the plan's policy.journal).
    type: str
    required: true
  timeout:
    description: Seconds to wait at most.
    type: int
    default: 900
  delay:
    description: Seconds between two looks.
    type: int
    default: 5
author: kup
"""

EXAMPLES = r"""
- name: Wait for the kexec hand-over
  kup_handover:
    boot_id: "{{ before.stdout }}"
    job_file: "{{ apply_job.results_file }}"
    kup: /usr/local/bin/kup
    journal: /var/lib/kup
"""

RETURN = r"""
handed_over:
  description: Whether the host now runs a new boot (the kexec happened).
  type: bool
  returned: success
verdict:
  description: handed-over, ended (the apply ended on the old kernel) or refused.
  type: str
  returned: always
looks:
  description: How many times the host was looked at.
  type: int
  returned: always
unreachable_looks:
  description: How many looks found the host unreachable (the kexec's gap).
  type: int
  returned: always
"""

import json


def main():
    # Only reached if the action plugin was not found: the waiting cannot happen on the host.
    print(json.dumps({"failed": True, "msg": "kup_handover runs on the controller: its action plugin was not found"}))


if __name__ == "__main__":
    main()
