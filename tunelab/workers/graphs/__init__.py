"""Dataflow graphs of real models: a small typed operator IR (`ir`), the operators it
knows (`ops`), an importer from `torch.export` (`frontend`), an executor back to PyTorch
(`execute`) and model suites built from their definitions (`models`).

Shared by the graph kinds (`graph-rewrite`, and whole-program fusion later). Importing
this package imports no torch: `ir` is plain Python; the rest import torch when used.
"""
