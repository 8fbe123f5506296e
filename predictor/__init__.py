"""The KServe custom predictor.

The request path (model.py reads top to bottom):
model.py       ChurnModel: decode (v1 here, v2 in codec_v2.py) → align → score → answer; LoadedModel is
               the core's ReleasedModel (digest checks, scorer, calibrator, threshold rule, explainer:
               churnflow/core/released_model.py) plus the aligner and the drift reference
codec_v2.py    Open Inference Protocol tensors in, InferResponse out
alignment.py   requests → validated columns → the one encoder (churnflow/core/encoding.py)
metrics.py     what /metrics exports beyond KServe's own latency histograms
watch.py       reloading on a release (--watch), in every serving process

Serving around it:
server.py      serve(): KServe's ModelServer with everything below in place
__main__.py    `python -m churnflow.predictor` on KServe's own argument parser (the image's entrypoint,
               and `churnflow serve`)
settings.py    the settings, typed and read once at start-up from flags and CHURNFLOW_* variables
guard.py       ASGI request guard: load shedding, body limit, request metrics, caller mistakes
routes.py      /predict, error shapes, multi-worker /metrics; repository.py: load/unload (off by default)
patches.py     KServe/uvicorn/asyncio behaviour changed from outside, each with its upstream reference
process.py     what each serving process (and spawned worker) does before it serves; served.py, logs.py,
               gc_freeze.py its parts
"""
