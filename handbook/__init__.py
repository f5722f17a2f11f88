"""Companion package of the course *Generative Foundation Models, hands-on*.

What a student reads, one module per chapter model plus the shared parts every chapter uses:

- ``handbook.shapeworld``  the course's generated data (images, captions, classes, 3D shapes, 2D points)
- ``handbook.attention``   attention, masks, multi-head (self and cross) attention, KV cache (ch. 2 on)
- ``handbook.embeddings``  sinusoidal positions (1D, 2D sin-cos) and the timestep embedding (ch. 2-6)
- ``handbook.transformer`` the GPT and its Transformer block; ``handbook.language`` its caption data (ch. 2)
- ``handbook.vit``         patches and the Vision Transformer; ``handbook.classification`` the CNN
                           baseline and the classifier recipe (ch. 3)
- ``handbook.unet``        the U-Net; ``handbook.denoising`` chapter 4's denoiser (ch. 4)
- ``handbook.diffusion``   noise schedules, DDPM/DDIM steps and samplers, guidance (ch. 5 on)
- ``handbook.ddpm2d``, ``handbook.ddpm_images``  chapter 5's 2D and image diffusion models
- ``handbook.dit``         the Diffusion Transformer; ``handbook.caption_encoder`` captions as vectors (ch. 6-7)
- ``handbook.training``    a small trainer: explicit loop, progress bar, EMA, warm-up + cosine
- ``handbook.checkpoints`` safetensors weights with a JSON manifest
- ``handbook.zoo``         shipped checkpoints, loaded by name and re-trainable by one command
- ``handbook.judge``       the ShapeWorld judge, a small CNN that scores generated images
- ``handbook.metrics``     accuracy, PSNR, the ShapeWorld Frechet distance
- ``handbook.plotting``    image grids and loss curves; ``handbook.widgets`` the explorers
- ``handbook.checks``      the one-line input checks; ``handbook.initialisation`` the default init
- ``handbook.device``      CPU by default, CUDA or MPS when present

What an instructor runs lives in ``handbook.course`` (``handbook assign | grade | zoo | bench``):
student notebooks from the solutions, the grader, the benchmark, the PyTorch build chooser.

Shape letters, in every comment: B batch, T tokens (S a second sequence, e.g. a caption), D width,
H heads, Dh the width of one head; images (B, C, Hh, Ww): C channels, Hh x Ww pixels.
"""

__version__ = "0.1.0"
