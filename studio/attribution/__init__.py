"""Attribution heat maps: where in a photo the model (or one of its units) looks.

``attribute(model, images, target, method)`` returns ``[B, H, W]`` float32 maps at each image's own
resolution, for the same models and target syntax as feature visualisation:

- ``saliency``: max over colour channels of ``|d score / d pixel|`` (Simonyan et al. 2014);
- ``gradient_x_input``: ``sum_c gradient * image`` (signed);
- ``smoothgrad``: the saliency map averaged over noisy copies (Smilkov et al. 2017); ``smoothgrad_squared``
  and ``vargrad``: the mean square and the variance of the gradients of those copies (Hooker et al. 2019);
- ``integrated_gradients``: ``sum_c (x - x') * mean gradient along the straight path`` (Sundararajan
  et al. 2017), signed; the map sums to ``f(x) - f(x')`` (see :func:`explain` for the error);
- ``gradcam`` / ``gradcam++``: class-weighted activation maps of a convolutional layer (Selvaraju et al.
  2017; Chattopadhay et al. 2018), ReLU'd and upsampled bilinearly;
- ``occlusion``, ``rise``, ``lime``, ``kernel_shap``: model-agnostic perturbation methods, which read only the
  scores of altered copies (:mod:`studio.attribution.perturbation`).

Is a map faithful? :func:`deletion_insertion`, :func:`road`, :func:`model_randomisation` (Adebayo et al.'s
sanity check as a score) and :func:`pointing_game` score one method's maps; :func:`evaluate` scores several
methods by several metrics side by side, and :func:`write_report` writes the table and plots;
:func:`studio.retraining.roar` retrains on the degraded data (remove and retrain).

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
from studio.attribution.evaluation import Evaluation, evaluate
from studio.attribution.faithfulness import Faithfulness, Road, deletion_insertion, noisy_linear_impute, road
from studio.attribution.localisation import Pointing, pointing_game
from studio.attribution.randomisation import Randomisation, model_randomisation
from studio.attribution.report import write_report
from studio.attribution.gradients import DEFAULT_STEPS, IG_RULES, integration_rule
from studio.attribution.machinery import top_classes

__all__ = ["CAM_METHODS", "DEFAULT_STEPS", "METHOD_FUNCTIONS", "IG_RULES", "METHODS", "PERTURBATION_METHODS",
           "SIGNED_METHODS", "Attribution", "Evaluation", "Faithfulness", "Pointing", "Randomisation", "Road",
           "attribute", "deletion_insertion", "evaluate", "model_randomisation", "noisy_linear_impute",
           "pointing_game", "road", "write_report",
           "cam_from_gradients", "default_cam_layer", "explain", "integration_rule", "method_name", "method_options",
           "top_classes"]
