"""DVC's own command line, with its config files written as UTF-8.

DVC 3.67.1 writes `.dvc/config*` through configobj with no encoding, which encodes ASCII only: in
a checkout under a path like /scratch/étude, `dvc exp run --temp` (which writes the temporary
folder's config with the cache's path) and `dvc config cache.dir …` fail with "'ascii' codec
can't encode character". DVC reads those files as UTF-8, so writing them as UTF-8 is all it
takes. The final job runs DVC through this module (`python -m tlstudy.tools.slurm.dvc_utf8 <dvc args>`).
"""

from __future__ import annotations

import sys

import configobj

_write = configobj.ConfigObj.write


def _write_utf8(self, *args, **kwargs):
    if not self.encoding and not self.default_encoding:
        self.default_encoding = "utf-8"
    return _write(self, *args, **kwargs)


configobj.ConfigObj.write = _write_utf8

if __name__ == "__main__":
    from dvc.cli import main

    sys.exit(main(sys.argv[1:]))
