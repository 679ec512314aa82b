"""mno.qr: the activation code QR code as PNG, SVG and terminal text, each read back module by module."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import png
import pytest

from mno import qr
from rsp.activation import ActivationCodeError

CODE = "1$smdp.kinsim.test$ABCDE-FGHIJ-KLMNO-PQRST$$1"
SVG_NS = "{http://www.w3.org/2000/svg}"


def finder_ok(matrix: list[list[bool]], top: int, left: int) -> bool:
    """ISO/IEC 18004 finder pattern: dark 7x7 ring, light ring, dark 3x3 centre."""
    for r in range(7):
        for c in range(7):
            ring = r in (0, 6) or c in (0, 6)
            centre = 2 <= r <= 4 and 2 <= c <= 4
            if matrix[top + r][left + c] != (ring or centre):
                return False
    return True


def test_payload_is_the_lpa_prefixed_activation_code():
    assert qr.qr_payload(CODE) == "LPA:" + CODE
    assert qr.qr_payload("LPA:" + CODE) == "LPA:" + CODE
    with pytest.raises(ActivationCodeError):
        qr.qr_payload("1$smdp.kinsim.test$lower-case")


def test_matrix_is_a_qr_symbol_with_quiet_zone_and_finder_patterns():
    matrix = qr.matrix(CODE)
    size = len(matrix)
    modules = size - 2 * qr.BORDER
    assert all(len(row) == size for row in matrix)
    assert (modules - 17) % 4 == 0 and 1 <= (modules - 17) // 4 <= 40  # a valid QR version
    border = qr.BORDER
    assert not any(matrix[r][c] for r in range(size) for c in range(size)
                   if min(r, c) < border or max(r, c) >= size - border)
    for top, left in ((border, border), (border, size - border - 7), (size - border - 7, border)):
        assert finder_ok(matrix, top, left)


def test_png_has_the_right_header_dimensions_and_modules():
    data = qr.png(CODE)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, rows, info = png.Reader(bytes=data).read()
    matrix = qr.matrix(CODE)
    assert width == height == len(matrix) * qr.BOX_SIZE
    assert info["greyscale"] and info["bitdepth"] == 1
    pixels = [list(row) for row in rows]
    half = qr.BOX_SIZE // 2
    decoded = [[pixels[r * qr.BOX_SIZE + half][c * qr.BOX_SIZE + half] == 0 for c in range(len(matrix))]
               for r in range(len(matrix))]
    assert decoded == matrix


def test_svg_is_well_formed_and_draws_exactly_the_dark_modules():
    root = ET.fromstring(qr.svg(CODE))
    assert root.tag == SVG_NS + "svg"
    matrix = qr.matrix(CODE)
    assert root.get("viewBox") == f"0 0 {len(matrix)} {len(matrix)}"
    (path,) = root.iter(SVG_NS + "path")
    squares = set()
    for x, y, right, bottom, back in re.findall(r"M(\d+),(\d+)H(\d+)V(\d+)H(\d+)z", path.get("d")):
        assert (int(right) - int(x), int(bottom) - int(y), back) == (1, 1, x)
        squares.add((int(y), int(x)))
    assert squares == {(r, c) for r, row in enumerate(matrix) for c, dark in enumerate(row) if dark}


def test_terminal_rendering_encodes_two_module_rows_per_line():
    text = qr.terminal(CODE)
    matrix = qr.matrix(CODE)
    lines = text.split("\n")
    assert len(lines) == (len(matrix) + 1) // 2 and all(len(line) == len(matrix) for line in lines)
    top = {"\u2588": False, " ": True, "\u2584": True, "\u2580": False}  # dark modules print light-on-dark
    bottom = {"\u2588": False, " ": True, "\u2584": False, "\u2580": True}
    for i, line in enumerate(lines):
        assert [top[ch] for ch in line] == matrix[2 * i]
        if 2 * i + 1 < len(matrix):
            assert [bottom[ch] for ch in line] == matrix[2 * i + 1]
