"""Torch-free data-set metrics: WIDER FACE face-detection AP (`widerface`) and COCO box mAP (`coco`)."""
