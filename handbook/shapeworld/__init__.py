"""ShapeWorld: the course's own small world, generated on the fly, nothing downloaded.

Five 3D objects (sphere, cube, cylinder, cone, torus) in six colours and two sizes, seen by a
camera from any viewpoint and rendered to small RGB images, each with labels, a caption
("a large red cube seen from above") and its camera pose; the exact 3D shape of every object
(signed distance, occupancy); and 2D point sets on outlines for 2D diffusion demos.

The modules, one job each:

- ``geometry``  exact signed distance functions of the objects (object space, y up)
- ``intersect`` where a ray first hits an object, and the surface normal there
- ``render``    camera, rays, shading: images, masks and depth, thousands per second on a CPU
- ``captions``  the caption grammar, its parser, and a word-level tokenizer
- ``points``    2D points spread along outlines (circle, square, triangle, star, heart)
- ``dataset``   the image data set with fixed disjoint train/val/test splits, cached
- ``classes``   the 30 (shape, colour) classes: class_of, shape_and_colour, class_name
"""

from .captions import (MAX_CAPTION_TOKENS, NULL_CAPTION, VIEWS, CaptionTokenizer, caption, check_prompt, encode_prompts,
                       is_valid_caption, parse_caption, view_index, view_of)
from .classes import NUM_CLASSES, NUM_COLOURS, NUM_SHAPES, class_name, class_of, shape_and_colour
from .dataset import SPLITS, ShapeWorldImages, load_images
from .geometry import SHAPES, SIZE_SCALE, SIZES, bounding_radius, occupancy, signed_distance
from .points import OUTLINES, load_points, outline_points, outline_polygon
from .render import (
    BACKGROUND,
    COLOUR_RGB,
    COLOURS,
    DEFAULT_DISTANCE,
    Render,
    RenderBatch,
    camera_rays,
    measure_images_per_second,
    render,
    render_batch,
)

__all__ = [
    "SHAPES", "COLOURS", "COLOUR_RGB", "SIZES", "SIZE_SCALE", "VIEWS", "OUTLINES", "SPLITS",
    "DEFAULT_DISTANCE", "BACKGROUND", "MAX_CAPTION_TOKENS",
    "signed_distance", "occupancy", "bounding_radius",
    "render", "render_batch", "Render", "RenderBatch", "camera_rays", "measure_images_per_second",
    "view_of", "view_index", "caption", "is_valid_caption", "parse_caption", "CaptionTokenizer", "NULL_CAPTION", "check_prompt",
    "encode_prompts",
    "outline_points", "outline_polygon", "load_points",
    "load_images", "ShapeWorldImages",
    "NUM_SHAPES", "NUM_COLOURS", "NUM_CLASSES", "class_of", "shape_and_colour", "class_name",
]
