"""Attribution heat maps: where in a photo the model (or one of its units) looks.

``attribute(model, images, target, method)`` returns ``[B, H, W]`` float32 maps at each image's own
resolution, for the same models and target syntax as feature visualisation:

- ``saliency``: max over colour channels of ``|d score / d pixel|`` (Simonyan et al. 2014);
- ``gradient_x_input``: ``sum_c gradient * image`` (signed);
- ``smoothgrad``: the saliency map averaged over noisy copies (Smilkov et al. 2017);
- ``integrated_gradients``: ``sum_c (x - x') * mean gradient along the straight path`` (Sundararajan
  et al. 2017), signed; the map sums to ``f(x) - f(x')`` (see :func:`explain` for the error);
- ``gradcam`` / ``gradcam++``: class-weighted activation maps of a convolutional layer (Selvaraju et al.
  2017; Chattopadhay et al. 2018), ReLU'd and upsampled bilinearly;
- ``occlusion``, ``rise``, ``lime``, ``kernel_shap``: model-agnostic perturbation methods, which read only the
  scores of altered copies (:mod:`studio.attribution.perturbation`).

The score explained is what the target reads (:class:`studio.targets.Target`): a class's raw logit, a
channel's spatial mean, one neuron, or a whole layer's mean square. Hooks exist only for one forward pass and
only on the layers a target or Grad-CAM needs; the rest of the network is handed a clone of each hooked
output, so a later in-place op cannot overwrite the activation being differentiated. The model runs in eval
mode with frozen parameters, its flags restored afterwards. Everything is batched in chunks of
``batch_size`` forward passes, and each image's map is independent of the others in its batch.
"""

from studio.attribution.api import (CAM_METHODS, METHOD_FUNCTIONS, METHODS, PERTURBATION_METHODS, SIGNED_METHODS,
                                    Attribution, attribute, explain, method_name, method_options)
from studio.attribution.cam import cam_from_gradients, default_cam_layer
from studio.attribution.faithfulness import Faithfulness, Road, deletion_insertion, noisy_linear_impute, road
from studio.attribution.gradients import DEFAULT_STEPS, IG_RULES, integration_rule
from studio.attribution.machinery import top_classes

__all__ = ["CAM_METHODS", "DEFAULT_STEPS", "METHOD_FUNCTIONS", "IG_RULES", "METHODS", "PERTURBATION_METHODS",
           "SIGNED_METHODS", "Attribution", "Faithfulness", "Road", "attribute", "deletion_insertion",
           "noisy_linear_impute", "road",
           "cam_from_gradients", "default_cam_layer", "explain", "integration_rule", "method_name", "method_options",
           "top_classes"]
