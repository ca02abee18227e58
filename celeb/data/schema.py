"""The shape of CelebA's data: file names, attribute order, column names and real prevalences.

Everything that must agree between the annotation parser, the synthetic generator, the splitter
and the trainers is defined here once.
"""

from __future__ import annotations

# The 40 attributes in the official column order of list_attr_celeba.txt.
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# Positive rate of each attribute in real CelebA (first 20,000 official rows, rounded),
# used by the synthetic generator so that its imbalance matches the real data's.
CELEBA_PREVALENCE: dict[str, float] = {
    "5_o_Clock_Shadow": 0.112, "Arched_Eyebrows": 0.264, "Attractive": 0.513,
    "Bags_Under_Eyes": 0.205, "Bald": 0.023, "Bangs": 0.151, "Big_Lips": 0.239,
    "Big_Nose": 0.237, "Black_Hair": 0.243, "Blond_Hair": 0.149, "Blurry": 0.052,
    "Brown_Hair": 0.203, "Bushy_Eyebrows": 0.144, "Chubby": 0.057, "Double_Chin": 0.046,
    "Eyeglasses": 0.065, "Goatee": 0.062, "Gray_Hair": 0.042, "Heavy_Makeup": 0.385,
    "High_Cheekbones": 0.450, "Male": 0.422, "Mouth_Slightly_Open": 0.479, "Mustache": 0.039,
    "Narrow_Eyes": 0.116, "No_Beard": 0.832, "Oval_Face": 0.279, "Pale_Skin": 0.043,
    "Pointy_Nose": 0.276, "Receding_Hairline": 0.078, "Rosy_Cheeks": 0.063, "Sideburns": 0.058,
    "Smiling": 0.479, "Straight_Hair": 0.212, "Wavy_Hair": 0.316, "Wearing_Earrings": 0.186,
    "Wearing_Hat": 0.050, "Wearing_Lipstick": 0.471, "Wearing_Necklace": 0.122,
    "Wearing_Necktie": 0.074, "Young": 0.780,
}

BBOX_COLUMNS: tuple[str, ...] = ("x_1", "y_1", "width", "height")
LANDMARK_COLUMNS: tuple[str, ...] = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)

# Official partition codes in list_eval_partition.txt.
PARTITION_NAMES: dict[int, str] = {0: "train", 1: "val", 2: "test"}
SPLITS: tuple[str, ...] = tuple(PARTITION_NAMES.values())  # the three splits, in order

# Official file names; Kaggle's copy ships the same tables as .csv (no identity file).
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
IMAGE_DIR = "img_align_celeba"

# Aligned CelebA images are all this size.
IMAGE_WIDTH, IMAGE_HEIGHT = 178, 218

# Column names of the prepared table (TABLE_FILE, celeba.parquet, in a data dir).
IMAGE_ID = "image_id"
PARTITION = "partition"
IDENTITY = "identity"
TABLE_FILE = "celeba.parquet"
