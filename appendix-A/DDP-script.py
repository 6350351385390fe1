"""Appendix A: distributed data-parallel (DDP) training of the toy network, processes started with mp.spawn.

The script starts one worker process per device with
``torch.multiprocessing.spawn``; each worker joins the process group
(``buildllm.distributed.ddp_setup``), trains its DDP copy of ``NeuralNetwork``
on its share of the toy data and evaluates it; only rank 0 prints the results.
With CUDA GPUs each process uses one GPU (backend NCCL); without, the processes
share the CPU (backend Gloo), which is how it is tested.

Examples::

    python appendix-A/DDP-script.py                    # one process per GPU, or 2 CPU processes
    python appendix-A/DDP-script.py --world-size 3 --epochs 5
    CUDA_VISIBLE_DEVICES=0,1 python appendix-A/DDP-script.py   # choose the GPUs
    python appendix-A/DDP-script.py --master-port 29501         # if port 12345 is taken

To launch with torchrun instead (also across machines), see DDP-script-torchrun.py.
"""

from __future__ import annotations

import sys

import torch
import torch.multiprocessing as mp

from buildllm.cli import UserError, add_ddp_toy_arguments, check_ddp_device, make_parser, port, positive_int, run_main
from buildllm.distributed import DEFAULT_MASTER_PORT, PortInUseError, check_port_free, cleanup, ddp_setup, print0
from buildllm.primer import train_toy_ddp


def default_world_size() -> int:
    """One process per visible GPU, or 2 CPU processes when there is no GPU."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def worker(rank: int, world_size: int, args) -> None:
    """What each spawned process runs: join the group, train, report from rank 0, leave the group."""
    info = ddp_setup(rank, world_size, master_addr=args.master_addr, master_port=args.master_port,
                     device=args.device)
    if info.device.type == "cpu":
        torch.set_num_threads(1)  # the processes share the CPU cores; one thread each avoids oversubscription
    print0(f"프로세스 {world_size}개, 백엔드 {torch.distributed.get_backend()}, 랭크 0의 장치 {info.device}", flush=True)
    train_acc, test_acc = train_toy_ddp(info, num_epochs=args.epochs, seed=args.seed,
                                        batch_size=args.batch_size, lr=args.lr)
    print0(f"훈련 정확도 {train_acc:.2f}, 테스트 정확도 {test_acc:.2f}", flush=True)
    cleanup()  # only after success: after an error, exit and let the launcher stop the other ranks


def build_parser():
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=positive_int, default=None,
                        help="number of processes (default: number of GPUs, or 2 on a CPU-only machine)")
    add_ddp_toy_arguments(parser)
    parser.add_argument("--master-addr", default="localhost", help="address of rank 0")
    parser.add_argument("--master-port", type=port, default=DEFAULT_MASTER_PORT,
                        help="free TCP port for the rendezvous")
    return parser


def run(args) -> int:
    check_ddp_device(args.device)
    if args.world_size is None:
        args.world_size = default_world_size() if args.device != "cpu" else 2
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and args.world_size > torch.cuda.device_count():
        raise UserError(f"--world-size {args.world_size} needs {args.world_size} GPUs, but "
                        f"{torch.cuda.device_count()} are visible; lower it or use --device cpu.")
    try:
        check_port_free(args.master_port, args.master_addr)
    except (PortInUseError, ValueError) as exc:
        raise UserError(f"{exc} Pass it with --master-port (with torchrun: --master-port or --rdzv-endpoint).") from None
    # spawn calls worker(rank, world_size, args) in world_size new processes, rank = 0 .. world_size-1.
    mp.spawn(worker, args=(args.world_size, args), nprocs=args.world_size, join=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
