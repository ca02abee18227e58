"""Synthetic CelebA: cartoon faces with known generative factors, in CelebA's exact on-disk layout.

`synthesize(out_dir, n, seed)` writes a folder that every CelebA reader accepts as the real thing
(torchvision's flat layout):

    out_dir/img_align_celeba/000001.jpg ...     178x218 RGB JPEGs (unless images=False)
    out_dir/list_attr_celeba.txt                the five annotation files in the official formats
    out_dir/list_eval_partition.txt             (count line, headers, padded fields, CRLF)
    out_dir/identity_CelebA.txt
    out_dir/list_bbox_celeba.txt
    out_dir/list_landmarks_align_celeba.txt
    out_dir/factors.parquet                     the TRUE generative factors of every image

The generative model has two levels, like CelebA: an identity fixes a person's base look (sex, skin
tone, hair colour/length/volume/texture, hairline, face shape, beard, eyebrows, nose, lips) and each
image of that person draws its own expression, accessories, pose and background. Rates come from
CELEBA_PREVALENCE and from the real per-sex rates in MALE_RATE, so all 40 attributes have CelebA's
prevalence and its obvious correlations (beards only on men, lipstick mostly on women, smiling with
an open mouth). Identity-level attributes are drawn with weighted stratified sampling so that their
image-level prevalence is exact, not just right on average.

37 of the 40 attributes are drawn (VISIBLE_ATTRIBUTES) and are a pure function of the factors
(`attributes_from_factors`); Attractive, High_Cheekbones and Young are sampled labels only.

Rendering is a pure function of one row of factors (`render_face`): no random numbers are drawn
while drawing, so a factor table re-renders to the same pixels, and the disentanglement metrics can
fix one factor and vary the rest (`sample_factors` + `render_factors`). FACTORS documents every
factor's type, range and meaning.

The modules, in the order they build on each other:

    factors     the factor table, beard styles, hair classes; attributes_from_factors
    sampling    CelebA's rates and identity sizes; sample_faces, sample_factors
    geometry    face size, pose, landmarks and bounding boxes
    render      drawing one face (render_face) and its JPEG (encode_jpeg)
    batch       many faces in worker processes: render_factors, write_images
    files       the annotation file formats, synthesize, copy_true_factors
"""

from celeb.synth.batch import render_factors
from celeb.synth.factors import (
    ATTRIBUTE_FACTORS, BEARD_STYLES, FACTOR_NAMES, FACTORS, HAIR_COLORS, HAIR_TEXTURES, HAIRLINES,
    HIDDEN_ATTRIBUTES, PALE_BELOW, VISIBLE_ATTRIBUTES, BeardStyle, Factor, attributes_from_factors,
)
from celeb.synth.files import FACTORS_FILE, SynthResult, copy_true_factors, synthesize
from celeb.synth.geometry import face_bbox, face_landmarks
from celeb.synth.render import encode_jpeg, render_face
from celeb.synth.sampling import IMAGES_PER_IDENTITY, SynthSample, identity_sizes, sample_faces, sample_factors

__all__ = [
    "ATTRIBUTE_FACTORS", "BEARD_STYLES", "FACTOR_NAMES", "FACTORS", "FACTORS_FILE", "HAIR_COLORS",
    "HAIR_TEXTURES", "HAIRLINES", "HIDDEN_ATTRIBUTES", "IMAGES_PER_IDENTITY", "PALE_BELOW",
    "VISIBLE_ATTRIBUTES", "BeardStyle", "Factor", "SynthResult", "SynthSample", "attributes_from_factors",
    "copy_true_factors", "encode_jpeg", "face_bbox", "face_landmarks", "identity_sizes", "render_face",
    "render_factors", "sample_faces", "sample_factors", "synthesize",
]
