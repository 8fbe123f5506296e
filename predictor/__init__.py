"""The KServe custom predictor. The request path, in order:

server.py      starts KServe's ModelServer with our HTTP hooks (limits, 400s, metrics)
model.py       ChurnModel: decode (v1 / v2) → align → score → answer
alignment.py   requests → validated columns → the one encoder (churnflow/encoding.py)
scoring.py     the compiled forest (ONNX Runtime) with scikit-learn as the fallback
metrics.py     what /metrics exports beyond KServe's own latency histograms
"""
