"""Crash safety: a writer process killed (SIGKILL) in the middle of batches of writes leaves a project
that opens intact, with only whole batches in it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from car_desktop.annotations import Project

BATCH = 25

WRITER = textwrap.dedent(f"""
    import sys, time
    import numpy as np
    from car_desktop.annotations import Project
    from car_desktop.annotations.provenance import Provenance
    p = Project.open(sys.argv[1])
    cat = p.get_or_create_category("x")
    im = p.list_images()[0]
    rng = np.random.default_rng(int(sys.argv[2]))
    n = 0
    while True:
        with p.batch():
            for i in range({BATCH}):
                m = rng.random((64, 80)) > 0.6
                p.add_annotation(im.id, cat.id, m, float(i), "car", Provenance(run_key=str(n), steps=i))
                time.sleep(0.001)  # so a kill lands inside a batch most of the time
            p.set_setting("batches", n + 1)
        n += 1
        print(n, flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_writer_leaves_intact_file(tmp_path: Path):
    path = tmp_path / "crash.cardb"
    with Project.create(path, tmp_path) as p:
        p.add_image_entry("a.png", 80, 64)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    committed = 0
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(round_)], stdout=subprocess.PIPE,
                                text=True, env=env)
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 2 and time.monotonic() < deadline:  # wait for two commits of this round
            line = proc.stdout.readline()
            if not line:
                break
            seen = int(line)
        time.sleep(0.013 * (round_ + 1))  # land somewhere inside a later batch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert seen >= 2, "writer did not start"
        with Project.open(path) as p:
            assert p._read("PRAGMA integrity_check")[0][0] == "ok"
            total = p.count_annotations()
            batches = p.get_setting("batches")
            assert total % BATCH == 0  # whole batches only
            assert total >= committed + seen * BATCH  # nothing reported as committed is lost
            committed = total
            anns = p.list_annotations(p.list_images()[0].id)
            # The setting written inside each batch agrees with the rows of that batch.
            assert max(int(a.provenance.run_key) for a in anns[-BATCH:]) + 1 == batches
            for a in anns[-BATCH:]:
                m = p.get_mask(a.id)
                assert m.shape == (64, 80) and int(m.sum()) == a.area
