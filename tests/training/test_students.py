"""Students: every registered architecture, any input channels, normalised output in the teacher dim."""
import pytest
import torch

from training.students import Student, StudentConfig, StudentError, list_students


@pytest.mark.parametrize("arch", list_students())
def test_each_student_maps_rgbd_to_unit_vectors(arch):
    torch.manual_seed(0)
    model = Student(StudentConfig(arch=arch, in_chans=4), embed_dim=16, image_size=64).eval()
    out = model(torch.randn(2, 4, 64, 64))
    assert out.shape == (2, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_edu_attention_student_uses_the_fixed_text():
    torch.manual_seed(0)
    model = Student(StudentConfig(edu_attention=True), embed_dim=16, image_size=64).eval()
    model.set_attention_text(torch.nn.functional.normalize(torch.randn(5, 16), dim=-1))
    x = torch.randn(2, 3, 64, 64)
    base = model(x)
    with torch.no_grad():
        model.edu.alpha.fill_(1.0)
    assert not torch.allclose(model(x), base)  # attention output now contributes


def test_wrong_channels_and_unknown_arch():
    model = Student(StudentConfig(), embed_dim=8, image_size=32)
    with pytest.raises(StudentError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 4, 32, 32))
    with pytest.raises(StudentError, match="unknown student arch"):
        StudentConfig(arch="alexnet").validate()
