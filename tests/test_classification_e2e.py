"""tools/quant_test.py on timm classifiers (ViT, Swin, a hybrid) with random weights on real ImageNet images:
the recorded top-k equals a direct computation from the dumped predictions."""
from __future__ import annotations

import json
import os.path as osp
import pickle
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))

TOPK = (1, 5, 100, 500)
CASES = {
    'deit_t': ['model.model_kwargs.img_size=32', 'model.model_kwargs.depth=2',
               'test_dataloader.dataset.pipeline.1.input_size=32'],
    'swin_t': ['model.model_kwargs.img_size=64', 'model.model_kwargs.window_size=4', 'model.model_kwargs.embed_dim=16',
               'model.model_kwargs.depths=(1,1,2,1)', 'model.model_kwargs.num_heads=(1,1,2,2)',
               'test_dataloader.dataset.pipeline.1.input_size=64'],
    'mobilevit_xxs': ['test_dataloader.dataset.pipeline.1.input_size=64'],
}


def direct_topk(preds, k):
    hits = [int(p['gt_label'].reshape(-1)[0]) in p['pred_score'].topk(k).indices.tolist() for p in preds]
    return 100.0 * sum(hits) / len(hits)


@pytest.mark.slow
@pytest.mark.parametrize('model', sorted(CASES))
def test_quant_test_runs_classification(model, tmp_path, imagenet_tiny):
    import quant_test
    config = osp.join(REPO, 'configs', 'classification', f'{model}_imagenet_tiny_minmax_w8a8.py')
    out = str(tmp_path / 'preds.pkl')
    record = quant_test.main([config, '--work-dir', str(tmp_path), '--out', out, '--cfg-options',
                              f'test_evaluator.topk={TOPK}', *CASES[model]])
    results = json.load(open(tmp_path / 'quant_results.json'))
    assert results['metrics'] == record['metrics'] and set(results['metrics']) == {'float', 'quant'}
    preds = pickle.load(open(out, 'rb'))
    labels = [int(line.split()[1]) for line in open(imagenet_tiny / 'val.txt')]
    assert [int(p['gt_label']) for p in preds] == labels
    for k in TOPK:
        assert results['metrics']['quant'][f'accuracy/top{k}'] == pytest.approx(direct_topk(preds, k))
    assert results['metrics']['quant']['accuracy/top500'] > 0  # the comparison above is not vacuous
    assert results['num_sites'] == sum(results['sites_by_kind'].values()) > 0
    assert results['calibration']['num_images'] == 4 and results['note'].startswith('no checkpoint given')
    assert all(torch.allclose(p['pred_score'].sum(), torch.tensor(1.0)) for p in preds)
    assert osp.isfile(results['state_file'])


@pytest.mark.slow
def test_quant_test_loads_a_timm_checkpoint(tmp_path):
    import quant_test
    import timm
    torch.manual_seed(0)
    net = timm.create_model('deit_tiny_patch16_224', img_size=32, depth=1)
    path = str(tmp_path / 'deit.pth')
    torch.save(net.state_dict(), path)
    config = osp.join(REPO, 'configs', 'classification', 'deit_t_imagenet_tiny_minmax_w8a8.py')
    record = quant_test.main([config, path, '--work-dir', str(tmp_path), '--no-float', '--cfg-options',
                              'model.model_kwargs.img_size=32', 'model.model_kwargs.depth=1',
                              'test_dataloader.dataset.pipeline.1.input_size=32'])
    assert record['checkpoint'] == path and 'note' not in record
    assert set(record['metrics']) == {'quant'}
    wrong = str(tmp_path / 'wrong.pth')
    torch.save(timm.create_model('deit_tiny_patch16_224', img_size=32, depth=2).state_dict(), wrong)
    from quant_hooks.utils.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='unexpected keys: blocks.1'):
        quant_test.main([config, wrong, '--work-dir', str(tmp_path), '--cfg-options', 'model.model_kwargs.img_size=32',
                         'model.model_kwargs.depth=1', 'test_dataloader.dataset.pipeline.1.input_size=32'])
