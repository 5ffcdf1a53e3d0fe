"""The images: folder scan, manifest and decoded cache, PACS's archive and domains, downloads."""
