"""DETA on PE, as a detectron2 project: two-stage Deformable DETR with IoU-based assignment whose
deformable attention is pe_dense's own (``pe_dense.ops``), over pe_dense's PE encoder.

Modules: ``backbone`` (PE -> strides 8/16/32), ``transformer`` (encoder, proposals, decoder),
``assigner`` and ``criterion`` (training), ``postprocess`` (NMS, soft-NMS), ``meta_arch`` (the
detectron2 model), ``tta`` (flip x multi-scale testing) and ``checkpoint`` (the released DETA-for-PE
checkpoint layout). Configs import what they use; importing the package does nothing else.
"""
