"""The emitted nn.Module under torch.nn.parallel.DistributedDataParallel.

Two CPU processes (gloo on the loopback interface only) each run half of a batch through a two-layer
bidirectional LSTM with lengths; DDP averages their gradients. That average must equal one
process's gradient of the mean of the two halves' losses over the whole batch (float64).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import rel_error

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.spec import load_cell

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    import lstm_layer

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = lstm_layer.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 5, 2])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    half = slice(2 * rank, 2 * rank + 2)  # each process: two rows of the batch
    out, (h_n, c_n) = ddp(x[:, half], lengths=lengths[half])
    loss = (out ** 2).sum() + (h_n * c_n).sum()
    loss.backward()
    if rank == 0:
        grads = {n: p.grad.tolist() for n, p in model.named_parameters()}
        with open(sys.argv[2], "w") as fh:
            json.dump(grads, fh)
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    (tmp_path / "lstm_layer.py").write_text(emit(derive(load_cell("lstm")), "torch"))
    (tmp_path / "worker.py").write_text(WORKER)
    result = tmp_path / "grads.json"
    for attempt in range(2):  # a port taken between choosing and binding it: once more
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
               "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
        procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path),
                                   str(result)], env={**env, "RANK": str(rank)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for rank in range(2)]
        try:
            outs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
        finally:
            for p in procs:
                p.kill()
        ok = all(p.returncode == 0 for p in procs)
        if ok or attempt or not any("address already in use" in o.lower() or "connect" in
                                    o.lower() for o in outs):
            break
    assert ok, "\n".join(outs)
    ddp_grads = json.loads(result.read_text())

    sys.path.insert(0, str(tmp_path))
    try:
        import lstm_layer
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    model = lstm_layer.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 5, 2])
    loss = 0
    for half in (slice(0, 2), slice(2, 4)):
        out, (h_n, c_n) = model(x[:, half], lengths=lengths[half])
        loss = loss + ((out ** 2).sum() + (h_n * c_n).sum()) / 2  # DDP averages over 2
    loss.backward()
    assert set(ddp_grads) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert rel_error(torch.tensor(ddp_grads[name], dtype=torch.float64), p.grad) <= 1e-12, name
        assert float(p.grad.norm()) > 0, name
