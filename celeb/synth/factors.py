"""What a synthetic face is made of: the factor table and how the visible attributes follow from it.

FACTORS documents every generative factor (type, range, identity or image level, meaning);
BEARD_STYLES, HAIR_COLORS, HAIRLINES and HAIR_TEXTURES are the classes its integer factors index.
`attributes_from_factors` turns a factor table into the 37 VISIBLE_ATTRIBUTES, exactly what the
renderer draws; ATTRIBUTE_FACTORS names the factor behind each of them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from celeb.data.schema import ATTRIBUTE_NAMES


class Factor(NamedTuple):
    kind: str  # "bool", "int" (a class index) or "float"
    low: float
    high: float
    level: str  # "identity": shared by all images of a person; "image": drawn per image
    meaning: str


HAIR_COLORS: tuple[str, ...] = ("black", "blond", "brown", "gray", "other")
HAIRLINES: tuple[str, ...] = ("normal", "receding", "bald")
HAIR_TEXTURES: tuple[str, ...] = ("plain", "straight", "wavy")


class BeardStyle(NamedTuple):
    name: str
    male_share: float  # share of men with this style among the first 20,000 real CelebA images
    stubble: int  # 0 none, 1 light (still No_Beard), 2 heavy
    full: bool
    goatee: bool
    mustache: bool
    sideburns: bool


# The 16 commonest real combinations of 5_o_Clock_Shadow/Goatee/Mustache/Sideburns/No_Beard among
# men (98.6% of them); shares are renormalised when sampling.
BEARD_STYLES: tuple[BeardStyle, ...] = (
    BeardStyle("clean", 0.5243, 0, False, False, False, False),
    BeardStyle("light stubble", 0.0734, 1, False, False, False, False),
    BeardStyle("heavy stubble", 0.1109, 2, False, False, False, False),
    BeardStyle("full beard", 0.0503, 0, True, False, False, False),
    BeardStyle("goatee", 0.0356, 0, False, True, False, False),
    BeardStyle("stubble + sideburns", 0.0308, 1, False, False, False, True),
    BeardStyle("goatee + sideburns", 0.0283, 0, False, True, False, True),
    BeardStyle("goatee + mustache + sideburns", 0.0234, 0, False, True, True, True),
    BeardStyle("mustache", 0.0228, 0, False, False, True, False),
    BeardStyle("sideburns", 0.0222, 0, False, False, False, True),
    BeardStyle("goatee + mustache", 0.0179, 0, False, True, True, False),
    BeardStyle("stubble + goatee + sideburns", 0.0159, 1, False, True, False, True),
    BeardStyle("stubble + goatee", 0.0119, 1, False, True, False, False),
    BeardStyle("stubble + goatee + mustache + sideburns", 0.0085, 1, False, True, True, True),
    BeardStyle("stubble + mustache", 0.0058, 1, False, False, True, False),
    BeardStyle("stubble + goatee + mustache", 0.0043, 1, False, True, True, False),
)

PALE_BELOW = 0.1  # skin_tone below this is Pale_Skin

FACTORS: dict[str, Factor] = {
    # identity level
    "male": Factor("bool", 0, 1, "identity", "square jaw, wider neck and brows; beards only on men"),
    "skin_tone": Factor("float", 0, 1, "identity", f"0 palest .. 1 darkest; < {PALE_BELOW} is Pale_Skin"),
    "hair_color": Factor("int", 0, len(HAIR_COLORS) - 1, "identity", f"index into HAIR_COLORS {HAIR_COLORS}"),
    "hair_shade": Factor("float", -1, 1, "identity", "hair brightness within its colour class"),
    "hair_length": Factor("float", 0, 1, "identity", "0 cropped .. 1 shoulder length; > 0.3 hangs below the ears"),
    "hair_thickness": Factor("float", 0, 1, "identity", "hair volume around the head (3 to 14 px)"),
    "hair_texture": Factor("int", 0, 2, "identity", f"index into HAIR_TEXTURES {HAIR_TEXTURES}"),
    "hairline": Factor("int", 0, 2, "identity", f"index into HAIRLINES {HAIRLINES}"),
    "face_width": Factor("float", 0, 1, "identity", "face half-width 36 .. 48 px (+5 if chubby)"),
    "oval_face": Factor("bool", 0, 1, "identity", "a longer face (+7 px)"),
    "chubby": Factor("bool", 0, 1, "identity", "a wider face (+5 px)"),
    "double_chin": Factor("bool", 0, 1, "identity", "a fold under the chin"),
    "beard_style": Factor("int", 0, len(BEARD_STYLES) - 1, "identity", "index into BEARD_STYLES"),
    "bushy_eyebrows": Factor("bool", 0, 1, "identity", "thick eyebrows"),
    "arched_eyebrows": Factor("bool", 0, 1, "identity", "eyebrows peaked in the middle"),
    "narrow_eyes": Factor("bool", 0, 1, "identity", "half-height eyes"),
    "bags_under_eyes": Factor("bool", 0, 1, "identity", "dark arcs under the eyes"),
    "big_nose": Factor("bool", 0, 1, "identity", "a wider nose"),
    "pointy_nose": Factor("bool", 0, 1, "identity", "a nose with a pointed tip"),
    "big_lips": Factor("bool", 0, 1, "identity", "thicker lips"),
    # image level
    "smile": Factor("float", 0, 1, "image", "mouth curvature and width; >= 0.5 is Smiling"),
    "mouth_open": Factor("bool", 0, 1, "image", "open mouth (teeth show when smiling)"),
    "eyeglasses": Factor("bool", 0, 1, "image", "dark frames"),
    "hat": Factor("bool", 0, 1, "image", "a brimmed hat (never on a bald or receding head)"),
    "hat_hue": Factor("float", 0, 1, "image", "hue of the hat"),
    "bangs": Factor("bool", 0, 1, "image", "a fringe over the forehead (normal hairline, no hat)"),
    "lipstick": Factor("bool", 0, 1, "image", "red lips"),
    "makeup": Factor("bool", 0, 1, "image", "eye shadow and eyeliner (Heavy_Makeup)"),
    "rosy_cheeks": Factor("bool", 0, 1, "image", "pink cheeks"),
    "earrings": Factor("bool", 0, 1, "image", "gold studs on the ear lobes"),
    "necklace": Factor("bool", 0, 1, "image", "a gold chain at the base of the neck"),
    "necktie": Factor("bool", 0, 1, "image", "a tie on the shirt (below the usual 148-px crop)"),
    "blurry": Factor("bool", 0, 1, "image", "Gaussian blur of radius 1.8 px"),
    "rotation": Factor("float", -15, 15, "image", "in-plane head rotation in degrees, counter-clockwise"),
    "scale": Factor("float", 0.95, 1.05, "image", "zoom about the face centre"),
    "shift_x": Factor("float", -3, 3, "image", "horizontal offset in px"),
    "shift_y": Factor("float", -3, 3, "image", "vertical offset in px"),
    "background_hue": Factor("float", 0, 1, "image", "hue of the plain background"),
    "background_value": Factor("float", 0.35, 0.95, "image", "brightness of the background"),
    "shirt_hue": Factor("float", 0, 1, "image", "hue of the shirt"),
}
FACTOR_NAMES: tuple[str, ...] = tuple(FACTORS)

HIDDEN_ATTRIBUTES: tuple[str, ...] = ("Attractive", "High_Cheekbones", "Young")
VISIBLE_ATTRIBUTES: tuple[str, ...] = tuple(a for a in ATTRIBUTE_NAMES if a not in HIDDEN_ATTRIBUTES)

# The factor each visible attribute is computed from (see attributes_from_factors): what a latent
# dim labelled with that attribute should carry, if the label is right.
ATTRIBUTE_FACTORS: dict[str, str] = {
    "5_o_Clock_Shadow": "beard_style", "Arched_Eyebrows": "arched_eyebrows", "Bags_Under_Eyes": "bags_under_eyes",
    "Bald": "hairline", "Bangs": "bangs", "Big_Lips": "big_lips", "Big_Nose": "big_nose",
    "Black_Hair": "hair_color", "Blond_Hair": "hair_color", "Blurry": "blurry", "Brown_Hair": "hair_color",
    "Bushy_Eyebrows": "bushy_eyebrows", "Chubby": "chubby", "Double_Chin": "double_chin",
    "Eyeglasses": "eyeglasses", "Goatee": "beard_style", "Gray_Hair": "hair_color", "Heavy_Makeup": "makeup",
    "Male": "male", "Mouth_Slightly_Open": "mouth_open", "Mustache": "beard_style", "Narrow_Eyes": "narrow_eyes",
    "No_Beard": "beard_style", "Oval_Face": "oval_face", "Pale_Skin": "skin_tone", "Pointy_Nose": "pointy_nose",
    "Receding_Hairline": "hairline", "Rosy_Cheeks": "rosy_cheeks", "Sideburns": "beard_style", "Smiling": "smile",
    "Straight_Hair": "hair_texture", "Wavy_Hair": "hair_texture", "Wearing_Earrings": "earrings",
    "Wearing_Hat": "hat", "Wearing_Lipstick": "lipstick", "Wearing_Necklace": "necklace",
    "Wearing_Necktie": "necktie",
}


def attributes_from_factors(factors: pd.DataFrame) -> pd.DataFrame:
    """The VISIBLE_ATTRIBUTES of each row, as bool columns: exactly what the renderer draws."""
    f = {name: factors[name].to_numpy() for name in FACTOR_NAMES}
    style = np.array([list(s[2:]) for s in BEARD_STYLES], dtype=int)[f["beard_style"].astype(int)]
    stubble, full, goatee, mustache, sideburns = style.T
    hair_color, hairline, texture = f["hair_color"], f["hairline"], f["hair_texture"]
    values = {
        "5_o_Clock_Shadow": stubble > 0, "Arched_Eyebrows": f["arched_eyebrows"],
        "Bags_Under_Eyes": f["bags_under_eyes"], "Bald": hairline == 2, "Bangs": f["bangs"],
        "Big_Lips": f["big_lips"], "Big_Nose": f["big_nose"], "Black_Hair": hair_color == 0,
        "Blond_Hair": hair_color == 1, "Blurry": f["blurry"], "Brown_Hair": hair_color == 2,
        "Bushy_Eyebrows": f["bushy_eyebrows"], "Chubby": f["chubby"], "Double_Chin": f["double_chin"],
        "Eyeglasses": f["eyeglasses"], "Goatee": goatee > 0, "Gray_Hair": hair_color == 3,
        "Heavy_Makeup": f["makeup"], "Male": f["male"], "Mouth_Slightly_Open": f["mouth_open"],
        "Mustache": mustache > 0, "Narrow_Eyes": f["narrow_eyes"],
        "No_Beard": ~((stubble == 2) | (full > 0) | (goatee > 0) | (mustache > 0) | (sideburns > 0)),
        "Oval_Face": f["oval_face"], "Pale_Skin": f["skin_tone"] < PALE_BELOW,
        "Pointy_Nose": f["pointy_nose"], "Receding_Hairline": hairline == 1,
        "Rosy_Cheeks": f["rosy_cheeks"], "Sideburns": sideburns > 0, "Smiling": f["smile"] >= 0.5,
        "Straight_Hair": texture == 1, "Wavy_Hair": texture == 2, "Wearing_Earrings": f["earrings"],
        "Wearing_Hat": f["hat"], "Wearing_Lipstick": f["lipstick"], "Wearing_Necklace": f["necklace"],
        "Wearing_Necktie": f["necktie"],
    }
    return pd.DataFrame({name: np.asarray(values[name], dtype=bool) for name in VISIBLE_ATTRIBUTES})
