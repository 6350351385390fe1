"""Appendix A: distributed data-parallel (DDP) training of the toy network, processes started by torchrun.

torchrun starts the processes and gives each one RANK (global index),
LOCAL_RANK (index on its machine), WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
``buildllm.distributed.setup_from_env`` reads and checks them. Each process uses
GPU ``cuda:LOCAL_RANK`` with CUDA (backend NCCL), otherwise the CPU (Gloo).
Only rank 0 prints the results.

One machine (2 processes; on a GPU machine use the number of GPUs)::

    torchrun --nproc_per_node=2 appendix-A/DDP-script-torchrun.py
    torchrun --nproc_per_node=2 --master-port=29501 appendix-A/DDP-script-torchrun.py   # other port

Several machines, e.g. 2 machines with 4 GPUs each (8 processes). Run the same
command on every machine, changing only --node-rank; MASTER below is the
address of machine 0 that the others can reach, and the port must be open::

    # machine 0
    torchrun --nnodes=2 --node-rank=0 --nproc_per_node=4 --master-addr=MASTER --master-port=29500 \\
        appendix-A/DDP-script-torchrun.py
    # machine 1
    torchrun --nnodes=2 --node-rank=1 --nproc_per_node=4 --master-addr=MASTER --master-port=29500 \\
        appendix-A/DDP-script-torchrun.py

(Elastic alternative, same command on every machine:
``torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=MASTER:29500
--rdzv-id=toy1 appendix-A/DDP-script-torchrun.py``.) If ``torchrun`` is not on
your PATH, ``python -m torch.distributed.run`` is the same program.
"""

from __future__ import annotations

import sys

import torch

from buildllm.cli import UserError, add_ddp_toy_arguments, check_ddp_device, make_parser, run_main
from buildllm.distributed import DistributedLaunchError, cleanup, print0, setup_from_env
from buildllm.primer import train_toy_ddp

SCRIPT = "appendix-A/DDP-script-torchrun.py"


def build_parser():
    parser = make_parser(__doc__.split("\n\n")[0], epilog="Launch with: torchrun --nproc_per_node=2 " + SCRIPT)
    add_ddp_toy_arguments(parser)
    return parser


def run(args) -> int:
    check_ddp_device(args.device)
    try:
        info = setup_from_env(device=args.device, script=SCRIPT)
    except DistributedLaunchError as exc:
        raise UserError(str(exc)) from None
    print0(f"프로세스 {info.world_size}개, 백엔드 {torch.distributed.get_backend()}, 랭크 0의 장치 {info.device}",
           flush=True)
    train_acc, test_acc = train_toy_ddp(info, num_epochs=args.epochs, seed=args.seed,
                                        batch_size=args.batch_size, lr=args.lr)
    print0(f"훈련 정확도 {train_acc:.2f}, 테스트 정확도 {test_acc:.2f}", flush=True)
    cleanup()  # only after success: after an error, exit and let the launcher stop the other ranks
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
