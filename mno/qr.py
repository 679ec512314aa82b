"""QR codes of activation codes (SGP.22 4.1.1: the "LPA:" form in an ISO/IEC 18004 QR code).

The ``qrcode`` library does the encoding; here we only choose the parameters and render the module
matrix three ways: PNG (through pypng), SVG (one path), and text for a terminal (two rows of modules
per line with half-block characters, light quiet zone, so a phone can scan it off the screen).
"""

from __future__ import annotations

import io

import qrcode
import qrcode.image.pure
import qrcode.image.svg
from qrcode.constants import ERROR_CORRECT_M

from rsp.activation import QR_PREFIX, parse_activation_code

BORDER = 4  # the quiet zone ISO/IEC 18004 asks for, in modules
BOX_SIZE = 8  # pixels per module in the PNG


def qr_payload(activation_code: str) -> str:
    """The text a QR code carries: the activation code with its "LPA:" prefix (validated)."""
    return parse_activation_code(activation_code).to_text(prefix=True)


def _qr(activation_code: str, box_size: int = BOX_SIZE, image_factory=None) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=BORDER,
                       image_factory=image_factory)
    qr.add_data(qr_payload(activation_code))
    qr.make(fit=True)
    return qr


def matrix(activation_code: str) -> list[list[bool]]:
    """Dark (True) and light modules, quiet zone included."""
    return _qr(activation_code).get_matrix()


def png(activation_code: str, box_size: int = BOX_SIZE) -> bytes:
    image = _qr(activation_code, box_size, qrcode.image.pure.PyPNGImage).make_image()
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()


def svg(activation_code: str) -> bytes:
    """A standalone SVG document (one path on a white background, sized in millimetres)."""
    image = _qr(activation_code, 10, qrcode.image.svg.SvgPathFillImage).make_image()
    return image.to_string(encoding="utf-8")


_HALF_BLOCKS = {(False, False): "\u2588", (True, True): " ", (True, False): "\u2584", (False, True): "\u2580"}


def terminal(activation_code: str) -> str:
    """The QR code as text: dark modules print as spaces on a light background of block characters,
    so it scans on dark and light terminals alike. Two module rows per text line."""
    rows = matrix(activation_code)
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)


__all__ = ["BORDER", "BOX_SIZE", "QR_PREFIX", "matrix", "png", "qr_payload", "svg", "terminal"]
