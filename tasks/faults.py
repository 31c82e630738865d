"""Named crash points, so fault tests can kill a stage exactly where it hurts.

Set `LMPIPE_CRASH_AT="<stage>:<point>:<action>"`; the process then fails at that point:

    LMPIPE_CRASH_AT=corpus:before_rename:SIGKILL lmpipe run corpus

Points: `after_build`, `after_validate` (tasks/transaction.py), `before_rename`, `after_rename`
(tasks/artifacts.publish), `push_before_manifest` (tasks/remote.push), `after_<shard file>`
and `after_<chunk file>` (tokenised chunk, e.g. `after_tok-sft-train-qa-000000000-000005000.arrow`) in the
shards stage and `step-<N>` after
optimizer step N of pretrain/sft and `training:saving-step-<N>` inside a resume-state
save (tasks/training.py). Actions: `SIGKILL`,
`SIGTERM` (the process signals itself), `raise` (RuntimeError) and `enospc` (OSError as from a
full disk). Unset, a crash point costs one dictionary lookup.
"""

import errno
import os
import signal


def crash_point(stage: str, point: str) -> None:
    spec = os.environ.get("LMPIPE_CRASH_AT")
    if not spec:
        return
    want_stage, want_point, action = spec.split(":")
    if (want_stage, want_point) != (stage, point):
        return
    if action in ("SIGKILL", "SIGTERM"):
        os.kill(os.getpid(), getattr(signal, action))
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {stage}:{point})")
    raise RuntimeError(f"injected failure at {stage}:{point}")
