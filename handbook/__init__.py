"""Companion package of the course *Generative Foundation Models, hands-on*.

One module per chapter model, plus the shared parts every chapter uses:

- ``handbook.attention``   attention, masks, multi-head (self and cross) attention, KV cache (ch. 2 on)
- ``handbook.transformer`` the GPT and its Transformer block; ``handbook.language`` its caption data (ch. 2)
- ``handbook.vit``         patches, 2D positions, the Vision Transformer, a CNN baseline (ch. 3)
- ``handbook.unet``        the U-Net; ``handbook.denoising`` chapter 4's denoiser (ch. 4)
- ``handbook.diffusion``   noise schedules, DDPM/DDIM steps and samplers, guidance (ch. 5 on)
- ``handbook.ddpm2d``, ``handbook.ddpm_images``  chapter 5's 2D and image diffusion models
- ``handbook.shapeworld``  the course's generated data (images, captions, 3D shapes, 2D points)
- ``handbook.device``      CPU by default, CUDA or MPS when present
- ``handbook.training``    a small trainer: explicit loop, progress bar, EMA
- ``handbook.checkpoints`` safetensors weights with a JSON manifest
- ``handbook.zoo``         shipped checkpoints, loaded by name and re-trainable by one command
- ``handbook.judge``       the ShapeWorld judge, a small CNN that scores generated images
- ``handbook.metrics``     accuracy, PSNR, the ShapeWorld Frechet distance
- ``handbook.plotting``    image grids and loss curves
- ``handbook.widgets``     the ipywidgets explorers the chapters share
- ``handbook.course.notebooks``   student notebooks generated from the solutions
- ``handbook.course.notebook_runner`` runs a whole notebook with nbclient (benchmark, tests)
- ``handbook.course.bench``       the benchmark table
"""

__version__ = "0.1.0"
