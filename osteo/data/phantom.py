"""Synthetic dental panoramic radiographs (DPR phantoms) with known ground truth.

Each phantom has a DXA T-score; osteoporosis (T <= -2.5) thins the mandibular cortex along
the inferior border and erodes its inner margin (Klemetti C1 smooth, C2 semilunar defects,
C3 porous), and makes the trabecular bone sparser. Age and sex follow Table 1 of
Lee et al. (2020) by class. Confounders seen on real DPRs are drawn too: framing, tilt, teeth
(more missing with age), the cervical spine's ghost over the midline, the hyoid's horns under
the border (where the manifest's ``hyoid`` is 1), contrast, gamma, black level, blur and noise.

Geometry: the inferior border in original pixels is
``y(x) = yc - a*s**2 - c*s**4 + tilt*s`` with ``s = (x - xc) / halfwidth``
(``border_y``); its parameters are manifest columns. In the thesis's resized frame
(1200 x 630) the default framing is that of one device (narrow spread);
``framing_spread=1`` widens it to the multi-device spread measured on real DPRs
(shared/dpr-geometry.md).

    python -m osteo.data.phantom --n 680 --out DIR --seed 0 [--params P.json] [--look L.json]

``--params`` sets any ``PhantomParams`` field from JSON (the border's framing among them:
``chin_row``, ``border_rise``, ``border_tilt_rows``, ``border_xc``, ``border_halfwidth``,
``border_square_share``), ``--look`` any ``Look`` field.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from osteo.io import atomic_save_image, atomic_write_csv, atomic_write_json, available_cpus, file_lock

log = logging.getLogger(__name__)

WORK_WH = (1200, 630)  # the frame phantoms are drawn in: the thesis's resize target (W x H)


@dataclass(frozen=True)
class PhantomParams:
    """Population and rendering parameters (defaults: the thesis's Table 1, one device)."""

    n: int = 680
    seed: int = 0
    difficulty: float = 1.0          # scales the individual noise that blurs the signal
    framing_spread: float = 0.0      # 0: one device (narrow); 1: multi-device spread
    frac_osteoporosis: float = 300 / 680
    female_frac: tuple = (332 / 380, 233 / 300)   # by class (0, 1)
    age_mean: tuple = (58.5, 68.4)
    age_sd: tuple = (11.8, 8.4)
    age_range: tuple = (27.0, 90.0)
    t_threshold: float = -2.5
    cw_at_t_minus1_mm: float = 3.9   # mean cortical width at T = -1
    cw_per_t_mm: float = 0.55        # mm of cortex per unit of T-score
    cw_noise_mm: float = 0.75        # individual variation at difficulty 1
    erosion_noise: float = 1.4       # of the endosteal erosion score (Klemetti class), in T units
    bvf_per_t: float = 0.05          # trabecular bone volume fraction per unit of T-score
    bvf_noise: float = 0.1
    width_px: tuple = (1348, 3150)   # original image widths: the thesis's, and the dev DPRs' (2700-3122)
    aspect: tuple = (0.36, 0.53)     # original height / width: the thesis's 0.49-0.53, the dev DPRs' 0.37-0.49
    fov_mm: float = 250.0            # field of view across the image width
    hyoid_prob: float = 0.5          # the hyoid under the border in the ROI (about half of the 40 dev ROIs, by eye)
    low_contrast_prob: float = 0.1
    bottom_strip_prob: float = 0.3   # an unexposed (black) strip along the bottom edge, below the chin
    bottom_strip_share: float = 0.07  # its height: up to this share of the image's (drawn uniformly)
    bottom_strip_gap: tuple = (25.0, 25.0)  # least distance of its top below the chin, rows of 1200 x 630
    # (drawn uniformly in this range); nearer than that, the finder takes the strip's edge for the
    # chin (at 6-30 rows it traced the chin 7-24 px below the drawn one)
    chin_gap_rows: tuple | None = None  # (lo, hi): the image ends this many rows of 1200 x 630 below the chin
    # (drawn uniformly) instead of the default framing's chin row; the dev DPRs end 2-39 rows below it
    # (benchmarks/params/dev-framing.json), so their placed boxes run past the bottom edge (black rows)
    # the subjects' draws (sample_subjects)
    t_no_osteoporosis: tuple = (-1.0, 0.9)   # T-score above the threshold: normal (mean, SD), redrawn below it
    t_osteoporosis_sd: float = 0.7    # T-score at or below it: the threshold minus a half-normal of this SD
    cw_range_mm: tuple = (0.8, 6.5)   # cortical width's limits (mm)
    klemetti_cuts: tuple = (1.9, 2.9)  # erosion score (-T plus its noise) where C2 and C3 begin
    bvf_at_t0: float = 0.52           # trabecular bone volume fraction at T = 0
    bvf_range: tuple = (0.2, 0.7)     # its limits
    height_px: tuple = (685, 1348)    # original image heights' limits (width times ``aspect``)
    # the border's framing in the 1200 x 630 frame (rows and columns): (mean, SD, low, high) of a
    # clipped normal for one device, and what one unit of ``framing_spread`` adds to each; spreads
    # of 1 are those of shared/dpr-geometry.md (rise + tilt up to 134 rows across x = 250..950, it
    # measured 43..137, median 86; 17 of its 18 borders fit a 140-row box with margins)
    chin_row: tuple = (580.0, 5.0, 568.0, 592.0)       # the border's lowest row (without tilt)
    chin_row_spread: tuple = (3.0, 12.0, -28.0, 22.0)
    border_rise: tuple = (72.0, 6.0, 55.0, 88.0)      # its rise from the chin to one half-width out
    border_rise_spread: tuple = (13.0, 14.0, -15.0, 30.0)
    border_tilt_rows: tuple = (0.0, 3.0, -6.0, 6.0)    # its tilt: rows at one half-width out (+ right lower)
    border_tilt_spread: tuple = (0.0, 5.0, -10.0, 10.0)
    border_xc: tuple = (600.0, 5.0)                    # its centre column (mean, SD)
    border_xc_spread: tuple = (12.0, 7.0)
    border_halfwidth: tuple = (350.0, 8.0)             # its half-width (mean, SD)
    border_halfwidth_spread: tuple = (0.0, 4.0)
    border_square_share: tuple = (0.7, 0.85)           # the s**2 share of the rise (the rest is s**4), drawn uniformly


@dataclass(frozen=True)
class Look:
    """How a phantom looks: grey levels, texture and acquisition, in the renderer's additive
    attenuation scale (0..1 grey before gain and gamma; lengths in 1200 x 630 pixels unless
    mm). Each is the centre of a per-image random range (the ``*_range`` fields give the spread of
    the main ones). The fields after them are the anatomy's own sizes and spreads (body height,
    cortex profile along the border, lacunae, teeth, the spine's and the hyoid's shapes) and the
    drawing's (the bands and slopes of its random fields, the sharpness of its regions' sides):
    not fitted, set from anatomy or by eye, a look JSON can change them too; ``render`` holds no
    number of its own but numerical guards. The fitted ones are fitted to the 40
    real DPRs of shared/real-dpr/abdi-dev by ``benchmarks/fit_phantom_look.py`` (matching the
    mean texture statistics of finder-placed ROIs in the whitened metric that a linear two-sample
    test uses; figures only, no image content is copied); ``benchmarks/phantom_realism.py``
    measures the fit.
    These values: the previous release's look (``benchmarks/looks/previous-release.json``: two
    iterations at ``--n 64 --params benchmarks/params/dev-framing.json``) with this release's
    structures switched on (the hyoid's horns, the raised black level, the spine ghost's fade under
    the border and its varying width, the submandibular band, the mandibular canal), then 21 fields
    refitted by two iterations at ``--n 128`` under the dev framing, the other fields held (the
    fitted 21: soft tissue under the border, the anterior region, texture contrast and blotch, the
    spine ghost's lines, edge, width, width spread, bands and fade, blur, toe, noise, the black
    level, the hyoid's brightness and the band's). The black level's ceiling was then lowered from
    the fitted 0.152 to 0.1: at 0.152 the finder traced a phantom framed with the chin near the
    bottom edge 2.41 px off (tests/test_anatomy.py allows 2), the tissue under the border clipped.

    Seven are held in the fit (its ``HOLD``), because fitted freely they hid the bone signal or
    misled the finder: the spine ghost's brightness and spread (it grew brighter and more variable
    than the dev DPRs' and hid the bone from image models, ``benchmarks/phantom_signal.py``), the
    cortical and trabecular attenuation (the cortex became no brighter than the bone above it),
    the grey offset (it took the tissue under the border to black, and the finder traced the
    border 1.5-7 px above the drawn one), the lacunae's depth (fitted, Klemetti lacunae became
    dark beads along the border) and the soft tissue's level (raised to about 0.16, it put the
    finder's trace 3.0-3.9 px below the drawn borders of tests/test_anatomy.py).

    The spine ghost's vertical bands (``spine_streaks``) and the coarse network of thin bright
    lines in the trabecular bone (``canals``) are on: real ROIs carry more power in vertical
    structures of 30-60 pixels over the midline, and sparser, sharper bright lines in the bone,
    than phantoms without them. What this release adds was seen on the dev ROIs: the hyoid under
    the border in about half (by eye), black pixels under the border that are not padding in 12 of
    40, a central block whose width under the border spans 98-397 px (10th-90th percentile; on 96
    dev-framed phantoms of seed 7, 159-246 px with the previous look, 72-294 px with this one)."""

    soft_level: float = 0.1021       # soft tissue over the face
    soft_fall_px: float = 6.0        # decay length of soft tissue below the border
    soft_floor: float = 0.0088       # soft tissue of the neck, far below the border
    tongue: float = 0.0476           # the tongue's edge / air space over the bone: largest grey step
    chin: float = 0.0201             # chin soft tissue below the border, at the midline
    anterior: float = 0.174          # lips/tongue over the anterior mandible
    anterior_width: float = 0.468    # half-width of the anterior region, in border half-widths
    anterior_shift_px: float = -22.2192  # mean offset of the anterior region from the border's centre (+ right)
    lacuna_depth: float = 0.512      # share of the cortex a lacuna removes at its centre
    radius_mm: float = 3.8183        # rounding of the lower border (bucco-lingual half-thickness)
    cortical_mu: float = 0.03        # grey per mm of cortical bone on the ray's path
    trabecular_ratio: float = 0.6    # trabecular attenuation / cortical, per unit volume fraction
    texture_amp: float = 1.2         # relative contrast of the trabecular texture
    texture_aniso: float = 3.3537    # its elongation along the border
    ridge_width: float = 0.2248      # thinness of the trabecular network's lines
    ridge_weight: float = 1.0        # network share of the texture (rest: smooth band-pass field)
    ridge_cell_px: float = 10.1648   # size of the network's cells
    ridge_beta: float = 0.5914       # spectral slope of the field whose zero lines make the network
    ridge_aniso: float = 2.9545      # elongation of the network's cells along the border
    canals: float = 0.4396           # a coarser network of thin bright lines over it, relative
    canal_cell_px: float = 25.7722   # its cells' size
    canal_width: float = 0.0803      # thinness of its lines
    blotch: float = 0.8256           # coarse density variation of the trabecular bone
    spine: float = 0.1               # median brightness of the cervical spine's ghost
    spine_lines: float = 0.4882      # airway and vertebral edges in it, relative
    spine_sd: float = 0.4            # its spread between images (SD of the log brightness)
    spine_texture: float = 0.03      # relative contrast of its spongy bone
    spine_edge: float = 28.7179      # sharpness of its sides (exponent of the band's profile)
    spine_width_px: float = 157.109  # its median width
    spine_width_sd: float = 0.5864   # its spread between images (SD of the log width)
    spine_rows: float = 0.0783       # the vertebrae's rows across it, relative
    spine_streaks: float = 0.4662    # vertical bands over its ghost (vertebral and airway edges), relative
    streak_spread: float = 0.5742    # how far they reach beyond the spine's sides, in its half-widths
    streak_px: float = 19.9158       # width of the narrowest of them (pixels)
    neck_shadow: float = 0.0034      # broad vertical shadows of the neck's soft tissues
    blur_px: float = 1.2692          # unsharpness (Gaussian sigma)
    gain_sd: float = 0.1377          # spread of the gain between images
    offset_sd: float = 0.03          # grey offset (small: larger ones took the tissue under the border to black)
    toe: float = 0.08                # width of the detector's toe (soft compression toward black)
    noise: float = 0.0391            # quantum noise at grey 1 (full-size pixels)
    column_noise: float = 0.0088     # column-to-column gain of a scanning sensor
    noise_floor: float = 0.05        # quantum noise at grey 0, as a share of ``noise``
    noise_blur_px: float = 0.6       # the detector's blur of the quantum noise (Gaussian sigma, full-size pixels)
    noise_spread: float = 0.43       # per-image spread of the quantum noise (drawn uniformly within +- this share)
    texture_bvf_slope: float = 1.6   # the trabecular texture's contrast gain per unit of volume fraction below ``bvf_reference``
    black_prob: float = 0.2923       # share of images whose display clips the darkest tissue to black
    black_level: float = 0.1         # the most grey cut off there (drawn uniformly up to it)
    spine_below: float = 0.7121      # the spine ghost's strength under the border, relative to above it
    hyoid: float = 0.0865            # brightness of the hyoid's horns (where a subject's ``hyoid`` is 1)
    hyoid_core: float = 0.4          # their marrow's darkness relative to their shell
    hyoid_x_px: float = 200.0        # their distance either side of the border's centre
    hyoid_depth_px: float = 40.0     # their depth under the border
    hyoid_length_px: float = 37.5    # their half-length (drawn from 2/3 to 4/3 of it)
    hyoid_thickness_px: float = 10.0  # their half-thickness (drawn from 0.7 to 1.3 times it)
    hyoid_marrow: float = 0.5        # the marrow's extent, as a share of the shell's squared radius
    soft_band: float = 0.0122        # the submandibular soft tissue's band under the border
    soft_band_px: float = 25.0       # its depth (more toward the sides), where it ends at an edge
    soft_band_edge_px: float = 2.5   # the width of that edge (logistic scale)
    canal_walls: float = 0.03        # brightness of the mandibular canal's walls (0: not drawn)
    canal_depth_mm: float = 9.0      # the canal's height above the border, behind the mental foramen
    canal_wall_mm: float = 0.35      # the width of its walls
    canal_lumen: float = 0.4         # the darkness of its lumen, relative to its walls
    # how much each image differs from the centres above: each image multiplies a centre by a factor
    # drawn uniformly from (low, high); not fitted (``fit_phantom_look.py`` fits the centres)
    soft_level_range: tuple = (0.67, 1.33)
    soft_floor_range: tuple = (0.3, 1.7)
    soft_fall_range: tuple = (0.42, 1.58)
    chin_range: tuple = (0.25, 1.75)
    soft_band_px_range: tuple = (0.5, 1.5)    # and the band reaches up to twice as far at the sides
    soft_band_range: tuple = (0.3, 1.7)
    anterior_width_range: tuple = (0.75, 1.25)
    radius_range: tuple = (0.82, 1.18)
    cortical_mu_range: tuple = (0.87, 1.13)
    texture_aniso_range: tuple = (0.8, 1.2)   # and ``ridge_aniso``
    blotch_range: tuple = (0.6, 1.4)
    anterior_range: tuple = (0.4, 1.6)
    canal_depth_range: tuple = (0.75, 1.25)
    canal_walls_range: tuple = (0.5, 1.5)
    neck_shadow_range: tuple = (0.4, 1.6)
    hyoid_x_range: tuple = (0.6, 1.4)
    hyoid_depth_range: tuple = (0.4, 1.6)
    hyoid_length_range: tuple = (2 / 3, 4 / 3)
    hyoid_thickness_range: tuple = (0.7, 1.3)
    hyoid_range: tuple = (0.5, 1.5)
    blur_range: tuple = (0.67, 1.33)
    gamma_range: tuple = (0.85, 1.2)          # the display's gamma (an exponent, not a factor)
    column_noise_range: tuple = (0.0, 2.0)    # of ``column_noise``
    # the anatomy's own sizes and spreads (not fitted; mm where named so, else 1200 x 630 pixels)
    soft_face: float = 0.1           # soft tissue added at the top of the frame, fading downward
    soft_face_px: float = 160.0      # its decay length
    soft_texture: float = 0.025      # coarse mottle of the soft tissue (SD, grey)
    chin_width_range: tuple = (80.0, 150.0)    # the chin's soft tissue: half-width at the midline
    chin_fall_px: float = 80.0       # and its decay below the border
    soft_band_side_range: tuple = (0.0, 1.0)   # the submandibular band's extra reach at the sides (share)
    tongue_gap_range: tuple = (60.0, 120.0)    # the tongue's edge: rows above the border
    tongue_edge_px: float = 6.0      # its softness (logistic scale)
    body_mm_range: tuple = (26.0, 34.0)        # the body's height, crest to border, at the midline (mm)
    body_taper_mm: float = 5.0       # less toward the sides (mm per border half-width)
    body_loss_mm: float = 0.05       # and less with age (mm per year after ``body_loss_from_age``)
    body_loss_from_age: float = 50.0
    crest_fade_px: float = 4.0       # the bone's fade at the alveolar crest (logistic scale)
    anterior_shift_sd_px: float = 20.0   # the head's centre off the border's: spread between images
    radius_anterior_range: tuple = (0.2, 0.5)  # the lower border's rounding: extra share at the symphysis
    plate_mm_range: tuple = (1.0, 1.8)         # buccal and lingual cortical plates (mm)
    plate_anterior: float = 0.5      # their extra share at the symphysis
    cortex_low: float = 0.78         # cortical width away from the measuring site, as a share of it
    cortex_site: float = 0.55        # the measuring site (below the mental foramen), in border half-widths
    cortex_site_width: float = 0.3   # the width of the cortex's thickest stretch there, in half-widths
    wobble_c1: float = 0.04          # endosteal margin's irregularity by Klemetti class (share of the width)
    wobble_c2: float = 0.12
    wobble_c3: float = 0.2
    lacunae_c2: float = 14.0         # mean count of lacunae (Poisson) for C2
    lacunae_c3: float = 30.0         # and C3
    lacuna_site_c2_range: tuple = (0.5, 1.0)   # their depth in the cortex (share of its width from the
    lacuna_site_c3_range: tuple = (0.15, 1.0)  # border): endosteal for C2, through the cortex for C3
    lacuna_length_mm_range: tuple = (1.0, 3.0)  # their half-length along the border (mm)
    lacuna_height_range: tuple = (0.25, 0.5)   # their half-height (share of the cortical width)
    lacuna_blur_px: float = 1.2      # their edges' softness (Gaussian sigma)
    lacuna_rough: float = 0.5        # their irregularity (relative)
    lacuna_rough_field: tuple = (20.0, 3.0, 1.0)  # its random field: largest and smallest structures (px), spectral slope
    lacuna_reach: float = 1.2        # lacunae lie within this many border half-widths of the border's centre
    lacuna_core: float = 0.5         # a lacuna's full-depth core (squared radius, in its half-axes); it fades out by 1 + this
    coarse_per_bvf: float = 1.5      # how much the trabecular texture coarsens per unit of volume fraction lost
    bvf_reference: float = 0.55      # the volume fraction at which the texture has its base cell size and contrast
    texture_theta_sd: float = 0.4    # spread of the trabecular texture's direction (radians)
    texture_band_px: tuple = (60.0, 4.0)   # the smooth field's largest and smallest structures (px)
    texture_beta: float = 1.6        # its spectral slope
    texture_gain_clip: tuple = (0.7, 1.5)  # the least and most of the texture's contrast gain with bone fraction
    ridge_band_cells: tuple = (2.0, 0.5)   # the network's field: largest and smallest structures, in cells (and the canals')
    blotch_field: tuple = (300.0, 80.0, 2.0)   # the trabecular bone's coarse density variation: largest and smallest structures (px), spectral slope
    soft_texture_field: tuple = (300.0, 40.0, 2.0)  # the soft tissue's mottle: the same
    anterior_edge: float = 6.0       # sharpness of the anterior region's sides (exponent of its profile)
    body_reach: float = 1.45         # the mandible's body ends this many border half-widths from its centre
    ramus_span: tuple = (1.25, 1.6)  # the rami: from and to (border half-widths from the centre)
    ramus_height_px: float = 420.0   # and their height above the border (rows)
    chin_edge: float = 4.0           # sharpness of the chin soft tissue's sides (exponent of its profile)
    cortex_min_mm: float = 0.4       # the least cortical width anywhere along the border (mm)
    wobble_field: tuple = (400.0, 25.0, 1.0)  # the endosteal wobble along the border: longest and shortest (px), spectral slope
    canal_start_edge: float = 0.04   # the canal's start: softness (logistic scale, border half-widths)
    canal_rise_from: float = 0.5     # where it begins to rise toward the ramus (border half-widths)
    canal_rise_mm_range: tuple = (0.0, 4.0)    # the canal's rise toward the ramus (mm per half-width past 0.5)
    canal_radius_mm_range: tuple = (1.1, 1.9)  # its radius (mm)
    canal_start_range: tuple = (0.4, 0.6)      # where it begins (mental foramen), in border half-widths
    teeth_missing_at_40: float = 0.04    # share of teeth missing at age 40
    teeth_missing_per_year: float = 0.006
    teeth_missing_max: float = 0.55
    tooth_width_mm: tuple = (4.0, 7.0)     # incisors to molars (mm)
    root_mm_range: tuple = (12.0, 17.0)    # root length (mm)
    crown_mm_range: tuple = (7.0, 9.0)     # crown height (mm)
    occlusal_gap_mm_range: tuple = (0.0, 3.0)  # between the arches (mm)
    tooth_root: float = 0.05         # brightness of a root (dentin over bone)
    tooth_crown: float = 0.28        # of a crown (enamel)
    tooth_lines: float = 0.03        # darkness of the periodontal line and the root canal
    teeth_per_arch: int = 16
    teeth_spacing: float = 0.8       # exponent of their spacing from the midline (< 1: incisors narrower than molars)
    teeth_reach: float = 0.95        # the last molar's distance from the centre (border half-widths)
    root_taper: float = 0.65         # a root's narrowing toward its apex (share of its width)
    root_canal: float = 0.18         # the root canal's half-width (share of the root's)
    periodontal_px: float = 2.0      # the periodontal line's width (px)
    periodontal_apex: float = 0.02   # it wraps the apex, reaching past it by this share of the tooth's length
    tooth_blur_px: float = 0.7       # the teeth's edges' softness (Gaussian sigma)
    spine_shift_sd_px: float = 10.0  # the spine ghost's centre off the head's: spread between images
    spine_wall_px: float = 4.0       # the vertebral walls' width
    spine_walls: float = 0.3         # and brightness, relative to the ghost
    spine_period_px_range: tuple = (60.0, 95.0)   # the vertebrae's height (rows)
    spine_line_px_range: tuple = (4.0, 15.0)      # the airway and vertebral edges' widths
    spine_line_count: tuple = (1, 4)             # how many of them (drawn uniformly, both ends included)
    spine_line_reach: float = 1.2    # how far off the ghost's centre they lie, in its half-widths
    spine_wall_at: float = 0.95      # the vertebral walls' distance from the centre, in the ghost's half-widths
    spine_amp_clip: tuple = (-2.5, 1.0)    # the ghost's log brightness, off its median, is clipped to this range
    spine_width_clip: tuple = (-2.0, 2.0)  # and its log width
    spine_spongy_field: tuple = (150.0, 8.0, 2.0)  # its spongy bone's field: largest and smallest structures (px), spectral slope
    streak_field: tuple = (150.0, 1.0)    # the vertical bands' largest structures (px; the smallest: ``streak_px``), spectral slope
    streak_rows_field: tuple = (400.0, 100.0, 1.0)  # their variation down the image: largest and smallest (rows), spectral slope
    neck_shadow_field: tuple = (200.0, 30.0, 2.0, 3.0)  # the neck's shadows: largest and smallest (px), spectral slope, vertical elongation
    streak_rows: float = 0.5         # how much the vertical bands vary down the image (relative)
    hyoid_angle_range: tuple = (-0.1, 0.4)    # the hyoid horns' tilt (radians, mirrored per side)
    hyoid_blur_px: float = 2.0       # their edges' softness
    gain_min: float = 0.3            # the least gain an image draws
    low_contrast_gain: float = 0.75  # the gain's factor on low-contrast images (a subject's ``low_contrast``)


LOOK = Look()


# ----------------------------------------------------------------------------- subjects

def _framed(rng: np.random.Generator, one_device: tuple, per_spread: tuple, spread: float) -> float:
    """A normal draw (mean, SD), clipped to (low, high) where given: ``one_device`` plus
    ``spread`` times ``per_spread``, entry by entry (``PhantomParams``' framing fields)."""
    mean, sd, *lim = (a + spread * b for a, b in zip(one_device, per_spread))
    x = rng.normal(mean, sd)
    return float(np.clip(x, *lim)) if lim else float(x)


def sample_subjects(p: PhantomParams) -> pd.DataFrame:
    """Draw the subjects (no pixels): demographics, T-score, cortex and geometry.

    Returns one row per subject; border parameters are in original pixels.
    """
    rng = np.random.default_rng([p.seed, 0])
    n1 = int(round(p.n * p.frac_osteoporosis))
    label = np.array([0] * (p.n - n1) + [1] * n1)
    rng.shuffle(label)
    d = p.difficulty
    rows = []
    for i, y in enumerate(label):
        sex = "F" if rng.random() < p.female_frac[y] else "M"
        age = float(np.clip(rng.normal(p.age_mean[y], p.age_sd[y]), *p.age_range))
        if y == 0:  # T above the threshold (one decimal, at least 0.1 above it)
            t = rng.normal(*p.t_no_osteoporosis)
            while t <= p.t_threshold + 0.05:
                t = rng.normal(*p.t_no_osteoporosis)
            t = max(round(t, 1), p.t_threshold + 0.1)
        else:       # half-normal below it
            t = min(round(p.t_threshold - abs(rng.normal(0.0, p.t_osteoporosis_sd)), 1), p.t_threshold)
        cw = p.cw_at_t_minus1_mm + p.cw_per_t_mm * (t + 1.0) + rng.normal(0, p.cw_noise_mm * d)
        cw = float(np.clip(cw, *p.cw_range_mm))
        erosion = -t + rng.normal(0, p.erosion_noise * d)
        klemetti = "C1" if erosion < p.klemetti_cuts[0] else ("C2" if erosion < p.klemetti_cuts[1] else "C3")
        bvf = float(np.clip(p.bvf_at_t0 + p.bvf_per_t * t + rng.normal(0, p.bvf_noise * d), *p.bvf_range))  # trabecular density
        W = int(rng.integers(p.width_px[0], p.width_px[1] + 1))
        H = int(np.clip(round(W * rng.uniform(*p.aspect)), *p.height_px))
        # geometry in the 1200x630 frame, then to original pixels
        if p.chin_gap_rows is None:
            yc = _framed(rng, p.chin_row, p.chin_row_spread, p.framing_spread)
        else:
            yc = WORK_WH[1] - rng.uniform(*p.chin_gap_rows)
        rise = _framed(rng, p.border_rise, p.border_rise_spread, p.framing_spread)
        tilt = _framed(rng, p.border_tilt_rows, p.border_tilt_spread, p.framing_spread)
        xc = _framed(rng, p.border_xc, p.border_xc_spread, p.framing_spread)
        half = _framed(rng, p.border_halfwidth, p.border_halfwidth_spread, p.framing_spread)
        a_frac = rng.uniform(*p.border_square_share)
        sx, sy = W / WORK_WH[0], H / WORK_WH[1]
        rows.append(dict(
            patient_id=f"P{i:04d}", label=int(y), t_score=float(t), sex=sex, age=round(age, 1),
            dxa_site="lumbar_spine", cortical_width_mm=round(cw, 3), klemetti=klemetti,
            trabecular_bvf=round(bvf, 3), width=W, height=H,
            pixel_mm=round(p.fov_mm / W, 5),
            border_xc=float(xc * sx), border_yc=float(yc * sy), border_a=float(rise * a_frac * sy),
            border_c=float(rise * (1 - a_frac) * sy), border_tilt=float(tilt * sy),
            border_halfwidth=float(half * sx),
            hyoid=int(rng.random() < p.hyoid_prob),
            low_contrast=int(rng.random() < p.low_contrast_prob),
        ))
    return pd.DataFrame(rows)


def border_y(x: np.ndarray, row) -> np.ndarray:
    """Row (original pixels, y down) of the inferior border at columns ``x`` (original pixels)."""
    g = row.get if isinstance(row, dict) else row.__getitem__
    s = (np.asarray(x, dtype=np.float64) - g("border_xc")) / g("border_halfwidth")
    return g("border_yc") - g("border_a") * s ** 2 - g("border_c") * s ** 4 + g("border_tilt") * s


# ----------------------------------------------------------------------------- rendering

def roi_border_rows(row, roi, box_xywh) -> np.ndarray:
    """Row of the true inferior border in ROI pixels for each ROI column of a phantom.

    ``row`` holds the phantom's border columns, width and height (original pixels); ``roi``
    the ROI settings (resize_wh, scale); ``box_xywh`` the box in resized pixels.
    Returns float [w * scale].
    """
    x0, y0, w, h = box_xywh
    W, H = roi["resize_wh"]
    scale = roi.get("scale", 1.0)
    ow = int(round(w * scale))
    u = x0 + (np.arange(ow) + 0.5) / scale  # resized-frame column of each ROI column centre
    y = border_y(u * row["width"] / W, row) * H / row["height"]
    return (y - y0) * scale


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0 else a


def random_field(rng: np.random.Generator, shape: tuple[int, int], band: tuple[float, float],
                 beta: float, aniso: float = 1.0, theta: float = 0.0) -> np.ndarray:
    """Gaussian random field of unit SD, float32 (H, W): power ~ f**-beta inside the band
    ``(f_lo, f_hi)`` (cycles per pixel, smooth edges); ``aniso`` > 1 stretches its structures
    along the direction ``theta`` (radians from the x axis)."""
    from scipy import fft

    h, w = shape
    f32 = np.float32
    fy = np.fft.fftfreq(h).astype(f32)[:, None]
    fx = np.fft.rfftfreq(w).astype(f32)[None]
    c, s_ = f32(np.cos(theta)), f32(np.sin(theta))
    f = np.hypot((fx * c + fy * s_) * f32(aniso), (-fx * s_ + fy * c) / f32(aniso))
    f[0, 0] = 1.0
    amp = f ** f32(-beta / 2) * (1 - np.exp(-(f / f32(band[0])) ** 2)) * np.exp(-(f / f32(band[1])) ** 2)
    amp[0, 0] = 0.0
    z = np.empty((h, w // 2 + 1), np.complex64)  # single precision: half the time of numpy's complex128
    z.real = rng.standard_normal((h, w // 2 + 1), dtype=f32)
    z.imag = rng.standard_normal((h, w // 2 + 1), dtype=f32)
    out = fft.irfft2(z * amp, s=(h, w))
    return (out / (out.std() + 1e-12)).astype(f32)


def field_px(rng: np.random.Generator, shape: tuple[int, int], spec: tuple, theta: float = 0.0) -> np.ndarray:
    """``random_field`` from a ``Look`` field's spec: (largest, smallest structures in pixels,
    spectral slope[, elongation along ``theta``]). float32 (H, W), unit SD."""
    big, small, beta, *aniso = spec
    return random_field(rng, shape, (1 / big, 1 / small), beta, aniso[0] if aniso else 1.0, theta)


def chord_mm(t: np.ndarray, radius: float) -> np.ndarray:
    """Path length (mm) of a ray through a bone whose lower end is rounded with ``radius`` (mm),
    at depth ``t`` (mm) above that end: 0 below it, 2 * radius once past the rounding."""
    tt = np.clip(t, 0.0, radius)
    return 2.0 * np.sqrt(np.maximum(2.0 * radius * tt - tt * tt, 0.0))


def render(row: dict, p: PhantomParams, look: Look = LOOK) -> np.ndarray:
    """Draw one phantom; returns uint8 (height, width) in original pixels.

    Grey values are built in an additive attenuation scale in the 1200 x 630 frame: soft
    tissue, then the mandible as a projected shell (a rounded cortex of the subject's width
    around trabecular bone, so the cortex brightens from its periosteal margin toward its
    endosteal one, as a tangentially seen tube does), trabecular texture, lacunae, teeth, the
    spine's ghost (a block with vertical bands) and the hyoid's; then gain, gamma, blur and
    correlated noise at full size.
    How it looks is ``look`` (see ``Look``: fitted to the texture statistics of 40 real DPRs by
    ``benchmarks/fit_phantom_look.py``); no image content was copied.
    """
    rng = np.random.default_rng([p.seed, 1, int(row["patient_id"][1:])])
    Wk, Hk = WORK_WH
    W, H = row["width"], row["height"]
    sx, sy = W / Wk, H / Hk
    u = np.arange(Wk, dtype=np.float32)[None]
    v = np.arange(Hk, dtype=np.float32)[:, None]
    xc = row["border_xc"] / sx
    half = row["border_halfwidth"] / sx
    s = (u - xc) / half
    b = (border_y(u[0] * sx, row) / sy).astype(np.float32)[None]    # border row per column
    mm_v = row["pixel_mm"] * sy                                       # mm per work pixel, vertical
    mm_h = row["pixel_mm"] * sx                                       # and horizontal
    slope_mm = np.gradient(b[0]) * (mm_v / mm_h)
    depth = (b - v) * mm_v / np.sqrt(1 + slope_mm ** 2)[None]        # mm above the border, perpendicular
    d = p.difficulty

    # soft tissue: a level over the face, falling off into the dark submandibular region
    s_up = look.soft_level * rng.uniform(*look.soft_level_range)
    floor = look.soft_floor * rng.uniform(*look.soft_floor_range)
    fall = look.soft_fall_px * rng.uniform(*look.soft_fall_range)
    soft = s_up + look.soft_face * np.exp(-v / look.soft_face_px) + 0.0 * u
    below = v > b
    soft = np.where(below, floor + (soft - floor) * np.exp(-np.maximum(v - b, 0) / fall), soft)
    chin = np.exp(-np.abs((u - xc) / rng.uniform(*look.chin_width_range)) ** look.chin_edge - (v - b) / look.chin_fall_px)   # chin soft tissue
    soft = soft + below * look.chin * rng.uniform(*look.chin_range) * chin
    # the submandibular soft tissue's outline: a grey band that ends at an edge (random numbers drawn
    # whether it is drawn or not, here and for the canal and the black level: switching one off
    # changes nothing else)
    reach = look.soft_band_px * rng.uniform(*look.soft_band_px_range) * (1 + rng.uniform(*look.soft_band_side_range) * np.abs(s))
    band_gain = rng.uniform(*look.soft_band_range)
    if look.soft_band > 0:
        edge = np.exp(np.clip((v - b - reach) / look.soft_band_edge_px, -30, 30))
        soft = soft + below * look.soft_band * band_gain / (1 + edge)
    soft = soft + look.soft_texture * field_px(rng, (Hk, Wk), look.soft_texture_field)
    # the tongue's edge / air space: a soft horizontal step across the body
    tongue = b - rng.uniform(*look.tongue_gap_range)
    soft = soft + rng.uniform(-look.tongue, look.tongue) / (1 + np.exp(np.clip((v - tongue) / look.tongue_edge_px, -30, 30))) * (~below)

    # mandible: crest-to-border height and the bucco-lingual rounding of the body (mm)
    body_mm = (rng.uniform(*look.body_mm_range) - look.body_taper_mm * np.abs(s)
               - look.body_loss_mm * max(row["age"] - look.body_loss_from_age, 0))
    crest = b - body_mm / mm_v
    # outer radius of the lower border and buccal/lingual plate thickness (mm); the symphysis
    # is thicker, so the anterior mandible projects brighter than the body
    xa = xc + look.anterior_shift_px + rng.normal(0, look.anterior_shift_sd_px)   # the head's centre, off the border's by rotation
    ant = np.exp(-np.abs((u - xa) / half / (look.anterior_width * rng.uniform(*look.anterior_width_range))) ** look.anterior_edge)
    radius = look.radius_mm * rng.uniform(*look.radius_range) * (1 + rng.uniform(*look.radius_anterior_range) * ant)
    plate = rng.uniform(*look.plate_mm_range) * (1 + look.plate_anterior * ant)
    in_body = np.abs(s) < look.body_reach
    body = in_body / (1 + np.exp(np.clip((crest - v) / look.crest_fade_px, -30, 30)))   # fades out at the crest
    ramus = ((np.abs(s) >= look.ramus_span[0]) & (np.abs(s) < look.ramus_span[1]) & (v > b - look.ramus_height_px)).astype(np.float32)
    body = np.maximum(body, ramus * (v <= b)).astype(np.float32)

    # cortical width along the border: thickest below the mental foramen, endosteal wobble,
    # thinning and irregularity that grow with the Klemetti class
    cw = row["cortical_width_mm"]
    k = row["klemetti"]
    prof = look.cortex_low + (1 - look.cortex_low) * np.exp(-((np.abs(s[0]) - look.cortex_site) / look.cortex_site_width) ** 2)
    wobble = {"C1": look.wobble_c1, "C2": look.wobble_c2, "C3": look.wobble_c3}[k]
    cw_u = cw * prof * (1 + wobble * field_px(rng, (1, Wk), look.wobble_field)[0])
    cw_u = np.maximum(cw_u[None], look.cortex_min_mm)
    mu_c = look.cortical_mu * rng.uniform(*look.cortical_mu_range)   # cortical bone per mm of path
    r_trab = look.trabecular_ratio * row["trabecular_bvf"]  # trabecular relative to cortical
    outer = chord_mm(depth, radius)
    inner = chord_mm(depth - cw_u, radius - plate)
    cortical = outer - inner

    # lacunae: irregular resorption cavities at the endosteal margin (C2), through the cortex (C3)
    lac = np.zeros((Hk, Wk), np.float32)
    n_lac = {"C1": 0, "C2": rng.poisson(look.lacunae_c2), "C3": rng.poisson(look.lacunae_c3)}[k]
    for _ in range(n_lac):
        cu = rng.uniform(xc - look.lacuna_reach * half, xc + look.lacuna_reach * half)
        ci = int(np.clip(cu, 0, Wk - 1))
        frac = rng.uniform(*(look.lacuna_site_c2_range if k == "C2" else look.lacuna_site_c3_range))
        ct = cw_u[0, ci] * frac                        # depth of its centre, mm
        hu = rng.uniform(*look.lacuna_length_mm_range) / mm_h            # half-length along the border, px
        ht = rng.uniform(*look.lacuna_height_range) * cw_u[0, ci] / mm_v  # half-height, px
        cv_ = b[0, ci] - ct / mm_v
        r0, r1 = int(max(cv_ - ht - 2, 0)), int(min(cv_ + ht + 3, Hk))
        c0, c1 = int(max(cu - hu - 2, 0)), int(min(cu + hu + 3, Wk))
        if r1 <= r0 or c1 <= c0:
            continue
        e = ((u[:, c0:c1] - cu) / hu) ** 2 + ((v[r0:r1] - cv_) / ht) ** 2
        lac[r0:r1, c0:c1] = np.maximum(lac[r0:r1, c0:c1], np.clip(1 + look.lacuna_core - e, 0, 1))
    if n_lac:
        lac = np.clip(_blur(lac, look.lacuna_blur_px) * (1 + look.lacuna_rough * field_px(rng, (Hk, Wk), look.lacuna_rough_field)), 0, 1)

    # trabecular bone: band-limited anisotropic texture, coarser and more contrasted when sparse
    bvf = row["trabecular_bvf"]
    coarse = 1.0 + look.coarse_per_bvf * (look.bvf_reference - bvf)
    theta = rng.normal(0.0, look.texture_theta_sd)
    big, small = look.texture_band_px
    tex = field_px(rng, (Hk, Wk), (big * coarse, small * coarse, look.texture_beta,
                                   look.texture_aniso * rng.uniform(*look.texture_aniso_range)), theta)
    cell = look.ridge_cell_px * coarse          # trabecular network: the zero lines of a smooth field
    big, small = look.ridge_band_cells
    ridges = np.exp(-(field_px(rng, (Hk, Wk), (big * cell, small * cell, look.ridge_beta,
                                               look.ridge_aniso * rng.uniform(*look.texture_aniso_range)), theta) / look.ridge_width) ** 2)
    tex = (1 - look.ridge_weight) * tex + look.ridge_weight * (ridges - ridges.mean()) / (ridges.std() + 1e-6)
    if look.canals > 0:   # a coarser network of thin bright lines: the larger trabeculae and canal walls
        wide = look.canal_cell_px * coarse
        net = np.exp(-(field_px(rng, (Hk, Wk), (big * wide, small * wide, look.ridge_beta)) / look.canal_width) ** 2)
        tex = tex + look.canals * (net - net.mean()) / (net.std() + 1e-6)
    tex_amp = look.texture_amp * np.clip(1 + look.texture_bvf_slope * (look.bvf_reference - bvf), *look.texture_gain_clip)
    tex = tex_amp * tex + look.blotch * rng.uniform(*look.blotch_range) * field_px(rng, (Hk, Wk), look.blotch_field)
    bone = mu_c * (cortical * (1 - look.lacuna_depth * lac) + r_trab * inner * (1 + tex))
    # soft tissue of the lips, chin and tongue over the anterior mandible
    img = soft + body * (bone + look.anterior * rng.uniform(*look.anterior_range) * ant)
    # the mandibular canal: two thin bright walls along the body, behind the mental foramen
    dc = look.canal_depth_mm * rng.uniform(*look.canal_depth_range) + rng.uniform(*look.canal_rise_mm_range) * np.clip(np.abs(s) - look.canal_rise_from, 0, None)
    rc = rng.uniform(*look.canal_radius_mm_range)         # the canal's radius, mm
    start = rng.uniform(*look.canal_start_range, size=2)  # where it begins, in border half-widths (left, right)
    canal_gain = rng.uniform(*look.canal_walls_range)
    if look.canal_walls > 0:
        along = 1 / (1 + np.exp(np.clip((np.where(s < 0, start[0], start[1]) - np.abs(s)) / look.canal_start_edge, -30, 30)))
        wall = look.canal_wall_mm
        walls = np.exp(-((depth - dc - rc) / wall) ** 2) + np.exp(-((depth - dc + rc) / wall) ** 2) \
            - look.canal_lumen * (np.abs(depth - dc) < rc)
        img = img + body * look.canal_walls * canal_gain * along * walls

    # lower teeth: roots from the crest down 12-17 mm (dentin slightly denser than bone, a dark
    # periodontal line and canal), crowns above; upper crowns and roots above them
    miss = float(np.clip(look.teeth_missing_at_40 + look.teeth_missing_per_year * (row["age"] - 40), 0.0, look.teeth_missing_max))
    w0, w1 = look.tooth_width_mm   # incisors to molars
    n_t = int(look.teeth_per_arch)
    mid_t = max((n_t - 1) / 2, 0.5)   # the middle tooth's index (incisors there, molars at the ends)
    xs = xc + half * np.sign(np.linspace(-1, 1, n_t)) * np.abs(np.linspace(-1, 1, n_t)) ** look.teeth_spacing * look.teeth_reach
    for arch in (0, 1):
        for i, x_t in enumerate(xs):
            if rng.random() < miss:
                continue
            ci = int(np.clip(x_t, 0, Wk - 1))
            wt = (w0 + (w1 - w0) * abs(i - mid_t) / mid_t) / mm_h / 2   # half-width
            cr = crest[0, ci] if np.ndim(crest) else crest
            root = rng.uniform(*look.root_mm_range) / mm_v
            crown = rng.uniform(*look.crown_mm_range) / mm_v
            if arch == 0:
                top, bot, apex_down = cr - crown, cr + root, True
            else:
                occl = cr - crown - rng.uniform(*look.occlusal_gap_mm_range)
                top, bot, apex_down = occl - crown - root, occl, False
            r0, r1 = int(max(np.floor(top), 0)), int(min(np.ceil(bot) + 2, Hk))
            c0, c1 = int(max(np.floor(x_t - wt - 3), 0)), int(min(np.ceil(x_t + wt + 4), Wk))
            if r1 <= r0 or c1 <= c0:
                continue
            vv, uu = v[r0:r1], u[:, c0:c1]
            along = (vv - top) / (bot - top) if apex_down else (bot - vv) / (bot - top)  # 0 crown .. 1 apex
            rootpart = along > crown / (bot - top)
            taper = np.where(rootpart, 1 - look.root_taper * np.clip((along - crown / (bot - top)) / (1 - crown / (bot - top)), 0, 1), 1.0)
            dist = np.abs(uu - x_t) / (wt * taper)
            inside = (dist < 1) & (along >= 0) & (along <= 1)
            add = np.where(inside, np.where(rootpart, look.tooth_root, look.tooth_crown), 0.0)
            add = add - look.tooth_lines * ((dist >= 1) & (dist < 1 + look.periodontal_px / max(wt, 1)) & rootpart & (along <= 1 + look.periodontal_apex))
            add = add - look.tooth_lines * (inside & rootpart & (dist < look.root_canal))
            img[r0:r1, c0:c1] += _blur(add.astype(np.float32), look.tooth_blur_px)

    # cervical spine ghost over the midline: a wide block with sharp sides (the vertebral bodies,
    # their walls and spongy bone), over the whole height, with a few airway and vertebral edges
    amp = float(np.exp(np.clip(rng.normal(0.0, look.spine_sd), *look.spine_amp_clip))) * look.spine   # up to e x the median
    sw = look.spine_width_px * float(np.exp(np.clip(rng.normal(0.0, look.spine_width_sd), *look.spine_width_clip))) / 2
    sc = xa + rng.normal(0, look.spine_shift_sd_px)
    band = np.exp(-np.minimum(np.abs((u - sc) / sw), 6.0) ** look.spine_edge)   # capped: no overflow
    walls = np.exp(-((np.abs(u - sc) - look.spine_wall_at * sw) / look.spine_wall_px) ** 2)
    vert = 1 + look.spine_rows * np.sin(2 * np.pi * v / rng.uniform(*look.spine_period_px_range) + rng.uniform(0, 6.3))
    reach_l, (n_lo, n_hi) = look.spine_line_reach, look.spine_line_count
    lines = sum(rng.choice([-1, 1]) * look.spine_lines * np.exp(-((u - sc - rng.uniform(-reach_l, reach_l) * sw) / rng.uniform(*look.spine_line_px_range)) ** 2)
                for _ in range(rng.integers(int(n_lo), int(n_hi) + 1)))
    spongy = field_px(rng, (Hk, Wk), look.spine_spongy_field)
    fade = 1.0 if look.spine_below == 1 else np.where(below, look.spine_below, 1.0).astype(np.float32)
    img = img + amp * fade * (band * (1 + look.spine_texture * spongy) + look.spine_walls * walls + lines) * vert
    if look.spine_streaks > 0:
        reach = np.exp(-((u - sc) / (look.streak_spread * sw)) ** 2)
        streaks = field_px(rng, (1, Wk), (look.streak_field[0], look.streak_px, look.streak_field[1])) * (
            1 + look.streak_rows * field_px(rng, (Hk, 1), look.streak_rows_field))
        img = img + amp * fade * look.spine_streaks * reach * streaks
    # other superimposed soft tissues of the neck: broad vertical shadows
    img = img + look.neck_shadow * rng.uniform(*look.neck_shadow_range) * field_px(rng, (Hk, Wk), look.neck_shadow_field, np.pi / 2)
    # the hyoid's greater horns: a pair of bony shells under the border, either side of the midline;
    # drawn where the subject's ``hyoid`` is 1 (their random numbers are drawn either way, so that
    # the flag changes nothing else)
    for side in (-1, 1):
        hx = xc + side * look.hyoid_x_px * rng.uniform(*look.hyoid_x_range)
        hy = b[0, int(np.clip(hx, 0, Wk - 1))] + look.hyoid_depth_px * rng.uniform(*look.hyoid_depth_range)
        ang = side * rng.uniform(*look.hyoid_angle_range)
        la = look.hyoid_length_px * rng.uniform(*look.hyoid_length_range)
        lb = look.hyoid_thickness_px * rng.uniform(*look.hyoid_thickness_range)
        gain_h = rng.uniform(*look.hyoid_range)
        if row["hyoid"]:   # drawn in a window around it (its blur reaches 8 px beyond the shell)
            r0, r1 = int(np.clip(hy - la - 10, 0, Hk)), int(np.clip(hy + la + 11, 0, Hk))
            c0, c1 = int(np.clip(hx - la - 10, 0, Wk)), int(np.clip(hx + la + 11, 0, Wk))
            if r1 > r0 and c1 > c0:
                du, dv = u[:, c0:c1] - hx, v[r0:r1] - hy
                r2 = ((du * np.cos(ang) + dv * np.sin(ang)) / la) ** 2 + ((-du * np.sin(ang) + dv * np.cos(ang)) / lb) ** 2
                shell = (r2 < 1).astype(np.float32) - look.hyoid_core * (r2 < look.hyoid_marrow)
                img[r0:r1, c0:c1] += look.hyoid * gain_h * _blur(shell, look.hyoid_blur_px)

    # acquisition: unsharpness, gain, offset, gamma; then full-size noise with a detector blur
    img = _blur(img.astype(np.float32), look.blur_px * rng.uniform(*look.blur_range) * d)
    gain = max(rng.normal(1.0, look.gain_sd), look.gain_min) * (look.low_contrast_gain if row["low_contrast"] else 1.0)
    img = gain * img + rng.normal(0, look.offset_sd)
    # the detector's toe: low exposures are compressed smoothly toward black, not clipped
    img = look.toe * np.logaddexp(np.float32(0), img / np.float32(look.toe))
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(*look.gamma_range)
    full = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    # a scanning sensor's column-to-column gain differences, and an unexposed strip at the bottom
    full *= np.float32(1) + look.column_noise * rng.uniform(*look.column_noise_range) * rng.standard_normal((1, W), dtype=np.float32)
    if rng.random() < p.bottom_strip_prob:  # below the chin: it never hides the border
        lo, hi = p.bottom_strip_gap
        gap = lo if hi == lo else rng.uniform(lo, hi)
        top = max(H - int(rng.uniform(0.0, p.bottom_strip_share) * H), int(np.ceil((b.max() + gap) * sy)))
        full[top:] = 0.0
    noise = rng.standard_normal((H, W), dtype=np.float32)
    # quantum noise grows with attenuation: faint in the dark soft tissue, strongest in bone
    full += _blur(noise, look.noise_blur_px) * (np.float32(look.noise_floor) + full) * np.float32(
        look.noise * rng.uniform(1 - look.noise_spread, 1 + look.noise_spread) * d)
    black, cut = rng.random() < look.black_prob, np.float32(rng.uniform(0.0, 1.0) * look.black_level)
    if black and cut > 0:   # the display's black level, raised: the darkest tissue goes to 0
        full = (full - cut) / (1 - cut)
    return np.clip(np.rint(full * 255.0), 0, 255).astype(np.uint8)


class FieldsFileError(ValueError):
    """A JSON file of ``Look`` or ``PhantomParams`` fields that cannot be used: missing, not JSON
    of ``{"field": value}``, a name that is not a field, or a value of the wrong kind."""


NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}   # for the messages of _read_fields


def _read_fields(path: str | Path, cls: type) -> dict:
    """The ``{"field": value}`` of a JSON file, checked against the fields of dataclass ``cls``
    (numbers for number fields, whole numbers for whole-number ones, lists of as many numbers for
    tuples, of whole numbers where the default's are, returned as tuples). Raises FieldsFileError naming the file and the field."""
    what = cls.__name__
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FieldsFileError(f"{path}: no such file; give a JSON file of {what} fields, "
                              '{"field": value}') from None
    except json.JSONDecodeError as e:
        raise FieldsFileError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); write it as "
                              '{"field": value}') from None
    except (OSError, UnicodeDecodeError) as e:
        raise FieldsFileError(f"{path}: cannot be read ({e}); give a JSON file of {what} fields") from None
    if not isinstance(values, dict):
        raise FieldsFileError(f"{path}: holds a {type(values).__name__}, not an object; write it as "
                              '{"field": value}')
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise FieldsFileError(f"{path}: not fields of {what}: {', '.join(unknown)}")
    default = cls()

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k, v in values.items():
        d = getattr(default, k)
        if isinstance(d, int):   # (no field is a bool)
            ok, kind = isinstance(v, int) and not isinstance(v, bool), "a whole number"
        elif isinstance(d, float):
            ok, kind = number(v), "a number"
        else:   # a tuple (two to four entries), or None where the field is optional (a pair)
            size = 2 if d is None else len(d)
            whole = d is not None and all(isinstance(x, int) for x in d)
            ok = (v is None and d is None) or (isinstance(v, list) and len(v) == size and all(
                number(x) and (isinstance(x, int) or not whole) for x in v))
            kind = (f"a list of {NUMBER_WORDS.get(size, size)} {'whole ' if whole else ''}numbers"
                    + (" or null" if d is None else ""))
        if not ok:
            raise FieldsFileError(f"{path}: {k} = {json.dumps(v)}: give {kind}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def read_look(path: str | Path | None) -> Look:
    """``LOOK`` with the fields in a JSON file (``{"field": value}``) replaced; ``LOOK`` for None.
    Raises FieldsFileError (a ValueError) naming the file and any key that is not a ``Look``
    field or any value that is not a number."""
    if path is None:
        return LOOK
    return replace(LOOK, **_read_fields(path, Look))


# PhantomParams fields with a least value: (field, least, what to give)
PARAM_LEAST = (("n", 1, "give the number of phantoms to make (1 or more)"), ("seed", 0, "give 0 or more"),
               ("difficulty", 0, "give 0 or more"), ("framing_spread", 0, "give 0 or more"))


def read_params(path: str | Path | None, **given) -> PhantomParams:
    """``PhantomParams`` with the fields in a JSON file (``{"field": value}``, pairs as lists)
    and then those in ``given`` (command-line flags: ``given`` wins) replaced;
    ``PhantomParams(**given)`` for None. Raises FieldsFileError (a ValueError) naming the file
    and any key of it that is not a ``PhantomParams`` field or any value of the wrong kind, and
    naming the flag (``--framing-spread -1``) or the file's field for a value below its least
    (``PARAM_LEAST``)."""
    values = _read_fields(path, PhantomParams) if path is not None else {}
    p = PhantomParams(**{**values, **given})
    for field, least, hint in PARAM_LEAST:
        if getattr(p, field) < least:
            where = f"--{field.replace('_', '-')}" if field in given else f"{path}: {field} ="
            raise FieldsFileError(f"{where} {getattr(p, field)}: {hint}")
    return p


@functools.lru_cache(maxsize=4)
def generator_id(look: Look = LOOK) -> str:
    """Which generator draws the phantoms: SHA-1 (first 16 hex digits) of one reference phantom's
    pixels (the first subject of seed 0, drawn with Klemetti class C3 and the hyoid, so that the
    optional branches are drawn too). Any change to ``render`` or to ``look`` changes it;
    phantom.json records it, and ``ensure_phantom`` draws a set again whose record differs."""
    p = PhantomParams(n=1, seed=0)
    row = {**sample_subjects(p).iloc[0].to_dict(), "klemetti": "C3", "hyoid": 1}
    return hashlib.sha1(render(row, p, look).tobytes()).hexdigest()[:16]


def _render_to_file(args) -> str:
    row, p, path, look = args
    atomic_save_image(path, Image.fromarray(render(row, p, look)), compress_level=1)
    return path


# ----------------------------------------------------------------------------- the data set

def latent_features(subjects: pd.DataFrame) -> np.ndarray:
    """What the generator draws bone from, per subject: cortical width (mm), Klemetti class
    (C2 and C3 indicators) and trabecular volume fraction; float [N, 4]."""
    k = subjects["klemetti"]
    return np.column_stack([subjects["cortical_width_mm"], k == "C2", k == "C3",
                            subjects["trabecular_bvf"]]).astype(np.float64)


def oracle_auc(subjects: pd.DataFrame, split_seed: int = 0) -> dict:
    """Test-split AUC of the latent-variable oracle: a logistic regression on everything the
    generator knows about bone (``latent_features``), fitted on the subjects outside the
    held-out test split that the default split settings draw. Also: the oracle on all subjects
    (fitted on the same rows) and ``cw_test``, the true cortical width alone on the test split."""
    from sklearn.metrics import roc_auc_score

    from osteo.data.splits import SplitError, make_splits

    d = subjects.assign(image_rel=subjects["patient_id"])
    n_min = int(d["label"].value_counts().min()) if d["label"].nunique() == 2 else 0
    tpc = 68 if n_min >= 68 + 5 + 30 else None
    try:
        sp = make_splits(d, seed=split_seed, test_per_class=tpc,
                         test_fraction=None if tpc else 0.2, n_folds=5)
    except SplitError:  # too few phantoms to split: no oracle figure
        return {"test": float("nan"), "all": float("nan"), "n_test": 0, "cw_test": float("nan")}
    from sklearn.linear_model import LogisticRegression

    test = (sp["part"] == "test").to_numpy()
    y = subjects["label"].to_numpy()
    X = latent_features(subjects)
    score = LogisticRegression(max_iter=1000).fit(X[~test], y[~test]).predict_proba(X)[:, 1]
    cw = -subjects["cortical_width_mm"].to_numpy()
    return {"test": float(roc_auc_score(y[test], score[test])), "all": float(roc_auc_score(y, score)),
            "n_test": int(test.sum()), "cw_test": float(roc_auc_score(y[test], cw[test]))}


def generate(out: str | Path, p: PhantomParams = PhantomParams(), workers: int | None = None,
             progress: bool = True, look: Look = LOOK) -> Path:
    """Write ``images/*.png``, ``manifest.csv``, ``phantom.json`` and ``contact_sheet.png``
    into ``out``; returns the manifest path. The same parameters give byte-identical files.
    ``look`` changes how they are drawn (benchmarks; a non-default one is recorded in phantom.json)."""
    from tqdm.auto import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subjects = sample_subjects(p)
    subjects.insert(0, "image", [f"images/dpr_{i:04d}.png" for i in range(len(subjects))])
    jobs = [(r, p, str(out / r["image"]), look) for r in subjects.to_dict("records")]
    workers = workers or min(available_cpus(), 8)
    with tqdm(total=len(jobs), desc="phantoms", unit="img", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 2:
            with ProcessPoolExecutor(workers) as ex:
                for _ in ex.map(_render_to_file, jobs, chunksize=2):
                    bar.update()
        else:
            for j in jobs:
                _render_to_file(j)
                bar.update()
    manifest = atomic_write_csv(out / "manifest.csv", subjects)
    contact_sheet(subjects, out, out / "contact_sheet.png")
    summary = {"params": asdict(p), "oracle_auc": oracle_auc(subjects),
               "seconds": round(time.perf_counter() - t0, 1), "workers": workers,
               "class_stats": class_stats(subjects), "generator": generator_id(look)}
    if look != LOOK:
        summary["look"] = asdict(look)
    atomic_write_json(out / "phantom.json", summary)  # last: marks the set complete
    return manifest


def class_stats(df: pd.DataFrame) -> dict:
    """Per class: count, female/male, age mean/SD, cortical width mean/SD (mm)."""
    res = {}
    for y, g in df.groupby("label"):
        res[str(int(y))] = {"n": int(len(g)), "female": int((g["sex"] == "F").sum()),
                            "male": int((g["sex"] == "M").sum()),
                            "age_mean": float(g["age"].mean()), "age_sd": float(g["age"].std()),
                            "cw_mean": float(g["cortical_width_mm"].mean()),
                            "cw_sd": float(g["cortical_width_mm"].std())}
    return res


def contact_sheet(subjects: pd.DataFrame, root: Path, out: Path, per_class: int = 4,
                  tile_w: int = 480) -> Path:
    """A PNG grid of phantoms of both classes (rows), captioned with T-score and cortex."""
    from PIL import ImageDraw

    tiles = []
    for y in (0, 1):
        pick = subjects[subjects["label"] == y].head(per_class)
        for r in pick.to_dict("records"):
            im = Image.open(root / r["image"]).convert("L")
            im = im.resize((tile_w, int(tile_w * im.height / im.width)), Image.BILINEAR)
            tile = Image.new("L", (tile_w, im.height + 22), 0)
            tile.paste(im, (0, 22))
            ImageDraw.Draw(tile).text(
                (4, 4), f"{'OSTEOPOROSIS' if y else 'normal'}  T={r['t_score']:.1f}  "
                f"cortex={r['cortical_width_mm']:.2f} mm  {r['klemetti']}  {r['sex']} {r['age']:.0f}y", fill=255)
            tiles.append(tile)
    if not tiles:
        raise ValueError("no phantoms to show")
    th = max(t.height for t in tiles)
    cols = per_class
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("L", (cols * tile_w, rows * th), 30)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile_w, (i // cols) * th))
    atomic_save_image(out, sheet)
    return out


def ensure_phantom(out_dir: str | Path, workers: int | None = None, **params) -> Path:
    """Generate the phantom set in ``out_dir`` unless one with the same parameters, drawn by this
    generator (``generator_id``), is there; a set drawn by another version is drawn again.

    Parallel jobs wait on one lock: the first generates, the others reuse its files (every
    file is written atomically, and phantom.json, written last, marks the set complete).
    """
    p = PhantomParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()})
    out = Path(out_dir)
    info = out / "phantom.json"

    want = json.loads(json.dumps(asdict(p)))   # the parameters as phantom.json holds them
    # a field that a set's record lacks is one added since: the set was drawn with its default
    defaults = json.loads(json.dumps(asdict(PhantomParams())))

    def recorded() -> dict:
        r = json.loads(info.read_text()) if (out / "manifest.csv").exists() and info.exists() else {}
        if isinstance(r.get("params"), dict):
            r["params"] = {**defaults, **r["params"]}
        return r

    def complete(r: dict) -> bool:
        return r.get("params") == want and r.get("generator") == generator_id()

    if complete(recorded()):
        return out / "manifest.csv"
    with file_lock(out.parent / f".{out.name}.lock"):
        r = recorded()
        if complete(r):
            return out / "manifest.csv"
        if r.get("params") == want:
            log.warning("%s was drawn by another version of the phantom generator (%s, now %s): drawing it "
                        "again", out, r.get("generator", "not recorded"), generator_id())
        info.unlink(missing_ok=True)   # the set is incomplete until the new phantom.json is written
        log.info("generating %d phantom DPRs (seed %d) in %s ...", p.n, p.seed, out)
        return generate(out, p, workers=workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="number of phantoms (default 680)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=None, help="(default 0)")
    ap.add_argument("--difficulty", type=float, default=None, help="(default 1)")
    ap.add_argument("--framing-spread", type=float, default=None,
                    help="0: one device (default); 1: multi-device spread of real DPRs")
    ap.add_argument("--params", default=None,
                    help="JSON of PhantomParams fields, e.g. a device's framing (benchmarks/params/dev-framing.json); "
                         "the flags above win over it")
    ap.add_argument("--look", default=None, help="JSON of Look fields (default: the shipped look)")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)
    from osteo.cli import UserError, setup_logging

    setup_logging()
    given = {k: v for k, v in (("n", a.n), ("seed", a.seed), ("difficulty", a.difficulty),
                               ("framing_spread", a.framing_spread)) if v is not None}
    p = read_params(a.params, **given)   # checks each value against its least, naming its flag or file
    if a.workers is not None and a.workers < 1:
        raise UserError(f"--workers {a.workers}: give 1 or more")
    if Path(a.out).is_file():
        raise UserError(f"--out {a.out} is a file; give a folder for the images and manifest")
    manifest = generate(a.out, p, workers=a.workers, look=read_look(a.look))
    info = json.loads((Path(a.out) / "phantom.json").read_text())
    log.info(f"wrote {p.n} phantoms and {manifest} in {info['seconds']} s ({info['workers']} workers)")
    o = info["oracle_auc"]
    log.info(f"oracle AUC (logistic regression on the bone latents: cortical width, Klemetti class, trabecular "
             f"fraction): test split {o['test']:.3f} (n={o['n_test']}), all {o['all']:.3f}; true cortical width "
             f"alone {o.get('cw_test', float('nan')):.3f}")
    for y, st in info["class_stats"].items():
        log.info(f"  class {y}: n={st['n']} F/M={st['female']}/{st['male']} age {st['age_mean']:.1f} +- "
                 f"{st['age_sd']:.1f} cortex {st['cw_mean']:.2f} +- {st['cw_sd']:.2f} mm")
    log.info(f"contact sheet: {Path(a.out) / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
