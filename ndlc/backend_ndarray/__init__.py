"""needle's `backend_ndarray` (`from needle import backend_ndarray as nd`): NDArray, the devices
(`nd.cpu()`, `nd.cuda()`, `nd.cpu_numpy()`) and needle's array functions, on numpy storage.
It needs only numpy; `cuda().enabled()` asks ndlc's CUDA runtime, loaded only then."""
from .functions import *  # noqa: F401,F403
from .functions import __all__ as _functions
from .ndarray import *  # noqa: F401,F403
from .ndarray import __all__ as _ndarray

__all__ = [*_ndarray, *_functions]
