"""The registered model served by LitServe, for ``peer_serve_bench.py``: what a team might
deploy instead of vidmon. It reads the same multipart ``.npy`` upload at the same path,
decodes it with vidmon's own decoder, batches like vidmon (at most ``--batch-size``, no
extra wait) and runs the same network with the same preprocessing; it logs nothing and
measures no pixel features.

Usage: python bench/_litserve_peer.py --port N [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np
import torch

from monitor.preprocess import to_model_input
from monitor.runtime import autocast_for, resolve_device
from monitor.settings import Settings
from monitor.video import DecodeLimits
from serving.decode import decode_npy
from training import registry


class VideoClassifierAPI(ls.LitAPI):
    """One clip per request, batched across requests."""

    def setup(self, device: str) -> None:
        settings = Settings()
        self.runtime = registry.RegistrySource(settings).load(
            settings.model_uri, str(resolve_device(settings.serve.device)))
        self.limits = DecodeLimits()

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        upload = request["file"]
        return decode_npy(upload.file.read(), self.runtime.card, self.limits).clips[0]

    def batch(self, inputs):  # type: ignore[no-untyped-def]
        return np.stack(inputs)

    @torch.inference_mode()
    def predict(self, clips):  # type: ignore[no-untyped-def]
        # The network alone, as a team would serve it: no pixel features (vidmon's runtime
        # measures them beside the forward pass for monitoring; that cost is vidmon's).
        pixels = torch.from_numpy(clips).to(self.runtime.device)
        with autocast_for(self.runtime.device):
            logits, _ = self.runtime.network(to_model_input(pixels, self.runtime.card))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def unbatch(self, output):  # type: ignore[no-untyped-def]
        return list(output)

    def encode_response(self, probabilities):  # type: ignore[no-untyped-def]
        best = int(np.argmax(probabilities))
        return {"label": self.runtime.label_names[best],
                "confidence": float(probabilities[best])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    api = VideoClassifierAPI(max_batch_size=args.batch_size, batch_timeout=0.0,
                             api_path="/v1/predict")
    server = ls.LitServer(api, accelerator="cuda" if args.device.startswith("cuda") else "cpu",
                          workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False,
               log_level="warning")


if __name__ == "__main__":
    main()
