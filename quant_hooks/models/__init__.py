"""Models registered for configs: timm classifiers and the plain-ViT detection backbone."""
