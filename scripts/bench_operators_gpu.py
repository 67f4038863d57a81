# Radon backends on a CUDA GPU: build time, forward/adjoint time (batch 16, 256², 30 views), agreement with
# the matrix backend, ASTRA-CUDA gradient wiring and adjointness. Run by scripts/gpu_operator_check.sh.
import time, torch
from operators import Radon, ParallelBeam, FanBeam
def sync(): torch.cuda.synchronize()
N = 256
x = torch.rand(16, 1, N, N, device="cuda")
for g in (ParallelBeam(views=30), FanBeam(views=30, source_distance=600.0, detector_distance=300.0)):
    ref = None
    for b in ("matrix", "torch", "astra"):
        try:
            t = time.time(); op = Radon(g, N, backend=b, device="cuda"); sync(); build = time.time() - t
            y = op(x); sync(); t = time.time()
            for _ in range(5): y = op(x)
            sync(); fwd = (time.time() - t) / 5
            t = time.time()
            for _ in range(5): z = op.adjoint(y)
            sync(); adj = (time.time() - t) / 5
            ref = y if ref is None else ref
            print(g.kind, b, f"build {build:.2f}s fwd(B=16) {fwd*1e3:.1f}ms adj {adj*1e3:.1f}ms rel-vs-matrix {float((y-ref).norm()/ref.norm()):.2e}", flush=True)
            if b == "astra":
                xx = x[:2].clone().requires_grad_(True); (0.5 * op(xx).square().sum()).backward()
                e = op.adjoint(op(x[:2]))
                print("  astra cuda grad wiring rel", float((xx.grad - e).norm() / e.norm()))
                xd = torch.randn(1,1,N,N,device='cuda'); yd = torch.randn(1,*op.out_shape,device='cuda')
                print("  astra cuda adjointness (float32)", op.adjointness_error(xd, yd, op_norm=None))
        except Exception as exc:
            print(g.kind, b, "FAILED", type(exc).__name__, exc, flush=True)
