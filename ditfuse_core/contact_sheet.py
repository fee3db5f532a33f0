"""A labelled grid of images (rows of sources and results), for the demo and reports."""
from __future__ import annotations

from PIL import Image, ImageDraw


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], headers: list[str] | None = None,
                  cell: int = 256, pad: int = 6, label_h: int = 18) -> Image.Image:
    ncol = max(len(imgs) for _, imgs in rows) if rows else 1
    width = pad + ncol * (cell + pad) + 80
    height = label_h + pad + len(rows) * (cell + pad)
    sheet = Image.new("RGB", (width, max(height, label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, h in enumerate(headers or []):
        draw.text((80 + pad + j * (cell + pad), 3), h, fill="black")
    for i, (name, imgs) in enumerate(rows):
        y = label_h + pad + i * (cell + pad)
        draw.text((4, y + cell // 2), name, fill="black")
        for j, im in enumerate(imgs):
            im = im.convert("RGB")
            im.thumbnail((cell, cell))
            sheet.paste(im, (80 + pad + j * (cell + pad) + (cell - im.width) // 2, y + (cell - im.height) // 2))
    return sheet
