"""A reproducible transfer-learning study: ResNet-18 on PACS cartoon, driven by DVC."""

__version__ = "0.1.0"
