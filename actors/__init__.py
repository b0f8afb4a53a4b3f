"""The Ray actors and workers of a run: rollout (vLLM), weight store and transfer, reward, the Ray Train worker and
its update, checkpoints. Imports ``core``, ``losses`` and ``evaluation``. These modules run inside Ray processes and
import Ray and torch at the top; vLLM and DeepSpeed are imported where an engine or a worker is built, so the
driver can import a module for its helpers without loading them."""
