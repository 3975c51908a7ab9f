"""Why serving loads models in a thread that ends (``serving.swap.in_own_thread``).

torch on CPU runs its operators through OpenMP (libgomp), which keeps a pool of worker
threads for every thread that has ever run a parallel region. Once the pools hold more
threads than the machine has cores, libgomp stops spinning between regions for all of them,
and every operator pays for waking its workers. This bench measures the model thread's
batch-of-one forward pass (with pixel features, as the service runs it) in one process:

1. alone (the model thread is the only thread that ran torch);
2. after a new version was loaded and warmed up in a pooled thread that lives on (a
   ``ThreadPoolExecutor``, as the service's reload used to run);
3. after that pooled thread has ended;
4. after a new version was loaded with ``in_own_thread``, as the service now does.

and prints each against the first. Usage: python bench/thread_pool_bench.py [--passes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from monitor.runtime import ModelRuntime
from monitor.settings import Settings
from serving.threads import in_own_thread
from training.job import model_config_for, training_card
from training.modelfile import vidmon_network
from training.synthetic import CLASS_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=300)
    args = parser.parse_args()
    train = Settings().train
    card = training_card(train, CLASS_NAMES)

    def new_version() -> ModelRuntime:
        network = vidmon_network(model_config_for(train, len(CLASS_NAMES))).network.eval()
        runtime = ModelRuntime(network, card, "bench", "1", torch.device("cpu"))
        runtime.warm_up()
        return runtime

    # Nothing on this (main) thread may run torch: its pool would count against the rest.
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
    serving = {"runtime": model_thread.submit(new_version).result()}
    clip = np.random.default_rng(0).integers(0, 255, (1, *card.clip_shape), dtype=np.uint8)

    def forward_ms() -> float:
        runtime = serving["runtime"]
        for _ in range(20):
            runtime.predict(clip)
        started = time.perf_counter()
        for _ in range(args.passes):
            runtime.predict(clip)
        return (time.perf_counter() - started) / args.passes * 1000

    measured = [("alone", model_thread.submit(forward_ms).result())]
    pooled = ThreadPoolExecutor(1, thread_name_prefix="pooled")
    serving["runtime"] = pooled.submit(new_version).result()
    measured.append(("after a load in a pooled thread that lives on",
                     model_thread.submit(forward_ms).result()))
    pooled.shutdown(wait=True)
    measured.append(("after that pooled thread ended", model_thread.submit(forward_ms).result()))

    async def load() -> ModelRuntime:
        return await in_own_thread(new_version)

    serving["runtime"] = asyncio.run(load())
    measured.append(("after a load with in_own_thread",
                     model_thread.submit(forward_ms).result()))
    base = measured[0][1]
    print(f"model thread, batch-of-one forward pass ({torch.get_num_threads()} torch threads, "
          f"{args.passes} passes each):")
    for name, ms in measured:
        print(f"  {name:48s} {ms:6.2f} ms = {ms / base:.2f} x alone")


if __name__ == "__main__":
    main()
