"""The DatabaseBackup model shared by the webhook and the reconciler.

Layering: `common` imports only the standard library, croniter and kubernetes-asyncio. `webhook` and `reconciler`
import `common` and never each other, so both sides accept exactly the same schedules, defaults and names.
"""

from common.lazyimports import install as _install_lazy_imports

_install_lazy_imports()  # before any module of ours imports kubernetes-asyncio: see common/lazyimports.py
