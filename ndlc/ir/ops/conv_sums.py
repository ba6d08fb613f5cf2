"""A conv's input gradient summed back onto the input (col2im, over windows or wide rows) or taken
as the adjoint's own conv with the flipped kernel; the adjoint dilated for a strided weight gradient."""
from .windows import col2im_phases, window_plane


def dilated(b, g, s):
    """The adjoint with s - 1 zeros between outputs: each at the input position its window starts from."""
    if s == 1:
        return g
    g = b.dilate(g, axes=(1, 2), dilation=s - 1)
    return b.slice(g, start=(0, 0, 0, 0), stop=(g.shape[0], (g.shape[1] - 1) // s * s + 1,
                                                (g.shape[2] - 1) // s * s + 1, g.shape[3]))


def col2im(b, x, windows, k, s, p):
    """The (N, Cin, Ho, Wo, K, K) windows' adjoint summed back onto the NHWC input (unwindows),
    cropped to it where padded; overlapping strided windows by phases however short their rows
    (unwindows' nest guards each tap, scalar: ResNet9's 4x4 -> 2x2 input gradient 2.3x slower)."""
    batch, cin = windows.shape[:2]
    height, width = x.shape[1] + 2 * p, x.shape[2] + 2 * p
    if 1 < s < k:
        padded = col2im_phases(b, lambda i, j, place: place(window_plane(b, windows, i, j)), windows.shape[:-2],
                               k, s, (height, width))
    else:
        padded = b.unwindows(windows, kernel=k, stride=s, size=(height, width))  # (N, Cin, Hp, Wp)
    if p:
        padded = b.slice(padded, start=(0, 0, p, p), stop=(batch, cin, p + x.shape[1], p + x.shape[2]))
    return b.permute(padded, axes=(0, 2, 3, 1))


def conv_input_correlation(b, x, w, g, p):
    """A stride-1 conv's input gradient: the correlation of the adjoint with the flipped kernel,
    padded by k - 1 less the conv's own padding (which covers the input exactly), then padded or
    cropped to the input where the windows did not reach."""
    kernel = w.shape[:2]
    full = max(kernel) - 1
    reach = min(p, full)  # padding rows whose adjoint no input row needs
    flipped = b.permute(b.flip(w, axes=(0, 1)), axes=(0, 1, 3, 2))
    dx = b.conv(g, flipped, stride=1, padding=full - reach)
    start = [p - reach + full - (k - 1) for k in kernel]  # dx index of input row 0
    short = [max(0, a + d - e) for a, d, e in zip(start, x.shape[1:3], dx.shape[1:3])]
    if any(short):  # input rows past the last window get no adjoint
        dx = b.pad(dx, widths=((0, 0), (0, short[0]), (0, short[1]), (0, 0)))
    if dx.shape[1:3] != x.shape[1:3]:
        dx = b.slice(dx, start=(0, start[0], start[1], 0),
                     stop=(x.shape[0], start[0] + x.shape[1], start[1] + x.shape[2], x.shape[3]))
    return dx


def plane_col2im(b, x, columns, k, p):
    """The (N, Cin·K·K, Ho·Wp) windows' adjoint (zero in each row's K - 1 garbage columns) summed
    back onto the flattened padded planes of NHWC `x` (plane_unwindows: K·K shifted rows, each
    one interval; a spare row takes the last garbage columns' zeros), cropped to the input."""
    batch, h, w, cin = x.shape
    wp = w + 2 * p
    windows = b.reshape(columns, shape=(batch, cin, k, k, columns.shape[2]))
    planes = b.plane_unwindows(windows, kernel=k, row=wp, size=(h + 2 * p + 1) * wp)
    padded = b.reshape(planes, shape=(batch, cin, h + 2 * p + 1, wp))
    return b.permute(b.slice(padded, start=(0, 0, p, p), stop=(batch, cin, p + h, p + w)), axes=(0, 2, 3, 1))
